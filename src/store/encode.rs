//! Encoding a batch of frame bodies on several cores.
//!
//! Checksums and frame bodies are most of an append's work, and each record's are independent
//! of the others' once its sequence and id are assigned, so a long batch is encoded in parts
//! on scoped threads. Appending stays on the caller's thread, in order.

use std::num::NonZeroUsize;
use std::sync::LazyLock;
use std::sync::mpsc::{SendError, sync_channel};
use std::thread::{Builder, ScopedJoinHandle};

/// Records per part below which a batch is not split: a thread costs tens of microseconds
/// to start, a record's encoding about one.
const PART_MIN: usize = 256;

/// The most parts a batch is split into.
const PARTS_MAX: usize = 8;

/// The cores this process may use, read once (reading it may read cgroup files).
static CORES: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));

/// Fills every item with `encode(index, item)`. The error returned is the first by index;
/// on an error, items after it in the same part are left as they were. A part whose thread
/// cannot be started is encoded on the caller's thread.
pub(super) fn encode_all<T: Send, E: Send>(
    items: &mut [T],
    encode: &(impl Fn(usize, &mut T) -> Result<(), E> + Sync),
) -> Result<(), E> {
    let run = |first: usize, part: &mut [T]| {
        for (index, item) in (first..).zip(part) {
            encode(index, item)?;
        }
        Ok(())
    };
    let parts = (items.len() / PART_MIN).clamp(1, (*CORES).min(PARTS_MAX));
    if parts == 1 {
        return run(0, items);
    }
    let size = items.len().div_ceil(parts);
    std::thread::scope(|scope| {
        let mut chunks = (0..).step_by(size).zip(items.chunks_mut(size));
        let Some((_, mine)) = chunks.next() else {
            return Ok(());
        };
        let mut others = Vec::with_capacity(parts - 1);
        for (first, part) in chunks {
            // The part is handed over only once its thread has started, so that it can be
            // encoded here if the thread cannot be.
            let (give, take) = sync_channel::<&mut [T]>(1);
            let started = Builder::new()
                .name("esl-replay-encode".into())
                .spawn_scoped(scope, move || {
                    take.recv().map_or(Ok(()), |part| run(first, part))
                });
            others.push(match started {
                Ok(thread) => match give.send(part) {
                    Ok(()) => Part::Thread(thread),
                    Err(SendError(part)) => Part::Done(run(first, part)),
                },
                Err(_) => Part::Done(run(first, part)),
            });
        }
        let mut result = run(0, mine);
        for other in others {
            let outcome = match other {
                Part::Thread(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Part::Done(outcome) => outcome,
            };
            result = result.and(outcome);
        }
        result
    })
}

/// A part of a batch being encoded on its own thread, or already encoded here.
enum Part<'scope, E> {
    Thread(ScopedJoinHandle<'scope, Result<(), E>>),
    Done(Result<(), E>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_is_encoded_in_place_whatever_the_batch_length() {
        for len in [
            0,
            1,
            PART_MIN - 1,
            PART_MIN * 2 + 3,
            PART_MIN * PARTS_MAX * 3 + 1,
        ] {
            let mut buffers = vec![b"stale".to_vec(); len];
            let fill = |index: usize, buffer: &mut Vec<u8>| -> Result<(), usize> {
                buffer.clear();
                buffer.extend_from_slice(&index.to_le_bytes());
                Ok(())
            };
            encode_all(&mut buffers, &fill).unwrap();
            for (index, buffer) in buffers.iter().enumerate() {
                assert_eq!(buffer.as_slice(), index.to_le_bytes(), "{len} records");
            }
        }
    }

    #[test]
    fn the_error_returned_is_the_first_by_index() {
        let mut buffers = vec![Vec::new(); 5000];
        let every_thousandth = |index: usize, _: &mut Vec<u8>| match index % 1000 {
            999 => Err(index),
            _ => Ok(()),
        };
        assert_eq!(encode_all(&mut buffers, &every_thousandth), Err(999));
        let late = |index: usize, _: &mut Vec<u8>| match index {
            4000 | 4500 => Err(index),
            _ => Ok(()),
        };
        assert_eq!(encode_all(&mut buffers, &late), Err(4000));
    }
}
