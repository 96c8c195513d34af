//! Which background jobs did the gateway start, and how did they end?
//!
//! A node registers every `bgapi` the gateway sends under the Job-UUID it chose, as it sends
//! it, and settles the job when its BACKGROUND_JOB arrives: FreeSWITCH fires that event to
//! every subscribed connection, so a result that arrives after a reconnect settles it too.
//! When the session stops tracking a job (no result within its orphan timeout, 120 s by
//! default) the job's outcome becomes [`JobOutcome::Unknown`]. Waiters ([`Jobs::wait`]) are
//! woken when a job settles. The board keeps the newest [`JOBS_KEPT`] jobs and forgets
//! older ones, so it stays bounded however many jobs are started.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

/// How many jobs the board remembers; the oldest is forgotten when another is registered.
pub(crate) const JOBS_KEPT: usize = 4096;

/// What is known of a job's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Sent and acknowledged; no BACKGROUND_JOB yet.
    Pending,
    /// The BACKGROUND_JOB arrived with this body (what `api` would have answered, e.g.
    /// `+OK <call uuid>` or `-ERR NO_ROUTE_DESTINATION`).
    Done(String),
    /// The session stopped waiting for the BACKGROUND_JOB: the outcome is unknown (is
    /// BACKGROUND_JOB subscribed, and not hidden by a filter?).
    Unknown,
}

/// One job as the board knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The node whose connection sent it.
    pub node: String,
    /// The command after `bgapi` (`originate {…}sofia/… &park()`).
    pub command: String,
    /// How it ended, if it did.
    pub outcome: JobOutcome,
}

/// The gateway's background jobs, by Job-UUID; shared by the nodes and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Jobs {
    inner: Mutex<Board>,
}

#[derive(Debug, Default)]
struct Board {
    jobs: HashMap<String, watch::Sender<JobStatus>>,
    /// Job-UUIDs oldest first, for forgetting beyond [`JOBS_KEPT`].
    order: VecDeque<String>,
}

impl Jobs {
    /// Notes a job just sent by `node`.
    pub fn register(&self, job_uuid: &str, node: &str, command: &str) {
        let status = JobStatus {
            node: node.to_owned(),
            command: command.to_owned(),
            outcome: JobOutcome::Pending,
        };
        let mut board = self.inner.lock();
        if board
            .jobs
            .insert(job_uuid.to_owned(), watch::channel(status).0)
            .is_none()
        {
            board.order.push_back(job_uuid.to_owned());
        }
        while board.order.len() > JOBS_KEPT {
            if let Some(oldest) = board.order.pop_front() {
                board.jobs.remove(&oldest);
            }
        }
    }

    /// Settles a registered job (a job the board does not know, such as another client's,
    /// is ignored) and wakes its waiters.
    pub fn settle(&self, job_uuid: &str, outcome: JobOutcome) {
        if let Some(job) = self.inner.lock().jobs.get(job_uuid) {
            job.send_modify(|status| status.outcome = outcome);
        }
    }

    /// The job's status now, if the board knows it.
    #[must_use]
    pub fn get(&self, job_uuid: &str) -> Option<JobStatus> {
        self.inner
            .lock()
            .jobs
            .get(job_uuid)
            .map(|job| job.borrow().clone())
    }

    /// Waits until the job settles or `timeout` passes, and returns its status then
    /// (`None` if the board does not know it).
    pub async fn wait(&self, job_uuid: &str, timeout: Duration) -> Option<JobStatus> {
        let mut watching = self.inner.lock().jobs.get(job_uuid)?.subscribe();
        let settled = watching.wait_for(|status| status.outcome != JobOutcome::Pending);
        // A timeout, or the job forgotten meanwhile: either way, report what is known.
        let _ = tokio::time::timeout(timeout, settled).await;
        let status = watching.borrow().clone();
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_sees_the_result_and_unknown_jobs_are_ignored() {
        let jobs = std::sync::Arc::new(Jobs::default());
        jobs.register("j1", "pbx-a", "originate loopback/1 &park()");
        jobs.settle("someone-elses-job", JobOutcome::Done("+OK x".into()));
        let waiter = {
            let jobs = std::sync::Arc::clone(&jobs);
            tokio::spawn(async move { jobs.wait("j1", Duration::from_secs(30)).await })
        };
        jobs.settle("j1", JobOutcome::Done("+OK call".into()));
        let status = waiter.await.unwrap().unwrap();
        assert_eq!(status.outcome, JobOutcome::Done("+OK call".into()));
        assert_eq!(status.node, "pbx-a");
        assert!(jobs.get("someone-elses-job").is_none());
    }

    #[tokio::test]
    async fn a_wait_that_times_out_reports_the_job_pending() {
        let jobs = Jobs::default();
        jobs.register("j1", "pbx-a", "status");
        let status = jobs.wait("j1", Duration::ZERO).await.unwrap();
        assert_eq!(status.outcome, JobOutcome::Pending);
        assert!(jobs.wait("nope", Duration::ZERO).await.is_none());
    }

    #[test]
    fn the_board_forgets_the_oldest_job_beyond_its_bound() {
        let jobs = Jobs::default();
        for n in 0..=JOBS_KEPT {
            jobs.register(&format!("j{n}"), "pbx-a", "status");
        }
        assert!(jobs.get("j0").is_none());
        assert!(jobs.get("j1").is_some());
        assert!(jobs.get(&format!("j{JOBS_KEPT}")).is_some());
    }
}
