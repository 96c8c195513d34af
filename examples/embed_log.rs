//! Embeds the segment log on its own: append byte records under group commit, wait until
//! they are durable, read them back by cursor and by sequence, and drop a prefix.
//!
//! `cargo run --release --example embed_log [DIR]` (a temporary directory by default).

use std::path::PathBuf;

use esl_replay::storage::{Log, LogOptions, Seq};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| scratch.path().join("log"), PathBuf::from);

    // Opening is recovery: a torn tail left by a crash is cut and reported.
    let (mut log, report) = Log::open(&dir, LogOptions::default())?;
    println!("opened {} ({report:?})", dir.display());

    let mut last = Seq(0);
    for i in 0..10_000u32 {
        let body = format!("Event-Name: HEARTBEAT\nEvent-Sequence: {i}\n\n");
        last = log.append(body.as_bytes())?;
    }
    // Group commit (the default): one sync covers every record appended before it.
    log.wait_durable(last)?;
    println!("appended up to {last:?}, durable");

    let reader = log.reader();
    let mut cursor = reader.cursor(Seq(1))?;
    let mut count = 0;
    while let Some(record) = cursor.next()? {
        count += 1;
        if record.seq == Seq(1) {
            let text = String::from_utf8_lossy(record.payload);
            println!("first: {}", text.lines().nth(1).unwrap_or_default());
        }
    }
    println!("read {count} records in order");
    if let Some(payload) = reader.get(Seq(5_000))? {
        let text = String::from_utf8_lossy(&payload);
        println!("record 5000: {}", text.lines().nth(1).unwrap_or_default());
    }

    // Retention: records below the new start are never returned again; whole segments
    // below it are deleted.
    let truncated = reader.truncate_prefix(Seq(9_000))?;
    println!(
        "truncated: {truncated:?}; first readable {:?}",
        reader.first_seq()
    );
    log.close()?;
    Ok(())
}
