//! Live tail over any store: a blocking iterator of records as they are appended.

use std::collections::VecDeque;
use std::time::Duration;

use super::{ArtifactReader, Result};
use crate::record::{Criteria, MapTexts, ReadCursor, Record, RecordView};

/// Records after a cursor, waiting for new ones at the end; filtered by criteria.
///
/// It reads unfiltered pages and filters itself, so its cursor advances past records that do
/// not match and the wait never spins on them. Records pruned before it read them stop it
/// with [`Error::PrunedUnread`](super::Error::PrunedUnread), never a silent jump.
#[derive(Debug)]
pub struct Tail<'a, S: ArtifactReader + ?Sized> {
    store: &'a S,
    cursor: ReadCursor,
    criteria: Criteria,
    pending: VecDeque<Record>,
    wait: Duration,
}

impl<'a, S: ArtifactReader + ?Sized> Tail<'a, S> {
    /// Follows `store` from `cursor`, yielding records that match `criteria`.
    pub fn new(store: &'a S, cursor: ReadCursor, criteria: Criteria) -> Self {
        Tail {
            store,
            cursor,
            criteria,
            pending: VecDeque::new(),
            wait: Duration::from_millis(500),
        }
    }

    /// The cursor after the last record yielded or skipped.
    #[must_use]
    pub fn cursor(&self) -> &ReadCursor {
        &self.cursor
    }

    /// The next matching record, waiting at most `timeout` for one; `None` on timeout.
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub fn next_within(&mut self, timeout: Duration) -> Result<Option<Record>> {
        // A timeout too large for the clock waits without a deadline.
        let deadline = crate::storage::deadline_after(timeout);
        loop {
            while let Some(record) = self.pending.pop_front() {
                self.cursor = self.cursor.advance(record.append_sequence(), None)?;
                if self.criteria.matches(&record) {
                    return Ok(Some(record));
                }
            }
            let page = self
                .store
                .read_from_cursor(&self.cursor, 500, &Criteria::any())?;
            if let Some(first) = page.first() {
                self.refuse_pruned(first.append_sequence())?;
            }
            if page.is_empty() {
                let left = crate::storage::time_left(deadline).unwrap_or(self.wait);
                if left.is_zero() {
                    return Ok(None);
                }
                self.store
                    .wait_for_records(self.cursor.last_consumed_sequence(), left.min(self.wait))?;
            }
            self.pending.extend(page);
        }
    }
    /// Calls `visit` with the next matching records as borrowed views, as many as the next
    /// page read holds (the segment log views them where they are stored, so nothing is
    /// copied or parsed), waiting at most `timeout` for one; returns how many it visited, 0
    /// on timeout. Mixes freely with [`Tail::next_within`].
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub fn visit_within(
        &mut self,
        timeout: Duration,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<usize> {
        // Records an earlier `next_within` read go first, in order.
        let mut visited = 0;
        while let Some(record) = self.pending.pop_front() {
            self.cursor = self.cursor.advance(record.append_sequence(), None)?;
            if self.criteria.matches(&record) {
                visit(&record.view(&MapTexts::of(&record)));
                visited += 1;
            }
        }
        if visited > 0 {
            return Ok(visited);
        }
        let deadline = crate::storage::deadline_after(timeout);
        // The first sequence after the cursor that was checked against pruning.
        let mut checked = None;
        loop {
            let (criteria, mut last, mut held) = (&self.criteria, None, None);
            let after = self.cursor.last_consumed_sequence();
            let read =
                self.store
                    .visit_from_cursor(&self.cursor, 500, &Criteria::any(), &mut |view| {
                        let sequence = view.append_sequence();
                        // Nothing is visited past a jump until pruning is ruled out.
                        if held.is_some()
                            || (last.is_none()
                                && sequence > after.saturating_add(1)
                                && checked != Some(sequence))
                        {
                            held = held.or(Some(sequence));
                            return;
                        }
                        last = Some(sequence);
                        if criteria.matches_view(view) {
                            visit(view);
                            visited += 1;
                        }
                    })?;
            if let Some(first) = held {
                self.refuse_pruned(first)?;
                checked = Some(first);
                continue;
            }
            if let Some(last) = last {
                self.cursor = self.cursor.advance(last, None)?;
            }
            if visited > 0 {
                return Ok(visited);
            }
            if read == 0 {
                let left = crate::storage::time_left(deadline).unwrap_or(self.wait);
                if left.is_zero() {
                    return Ok(0);
                }
                self.store
                    .wait_for_records(self.cursor.last_consumed_sequence(), left.min(self.wait))?;
            }
        }
    }
}

impl<S: ArtifactReader + ?Sized> Tail<'_, S> {
    /// Fails if the records between the cursor and `first`, the next one read, were pruned;
    /// sequences may also jump where nothing was ever stored (failed writes, imports).
    fn refuse_pruned(&self, first: u64) -> Result<()> {
        let after = self.cursor.last_consumed_sequence();
        if first <= after.saturating_add(1) {
            return Ok(());
        }
        match self.store.stats()?.pruned_through {
            Some(pruned_through) if pruned_through > after => Err(super::Error::PrunedUnread {
                after,
                pruned_through,
            }),
            _ => Ok(()),
        }
    }
}

impl<S: ArtifactReader + ?Sized> Iterator for Tail<'_, S> {
    type Item = Result<Record>;

    /// Blocks until the next matching record exists.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_within(Duration::from_secs(3600)) {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }
}
