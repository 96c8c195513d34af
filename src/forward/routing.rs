//! Which records a target takes, by ESL event name: a Redis stream takes every record or
//! only the captured events it names, and the forwarder leaves out, before encoding, the
//! records no stream takes (counted as skipped; the checkpoint moves past them).
//!
//! Only captured events (`event.raw` records) have a name here. Records the capture derives
//! from an event (`bgapi.complete`, the bookkeeping twin of a `BACKGROUND_JOB` our own bgapi
//! caused) and records that are not events at all (commands, replies, connection lifecycle,
//! gaps) are not events, so a list of event names never takes them.

use std::collections::BTreeSet;

/// The artifact name of a captured ESL event.
pub(crate) const EVENT_ARTIFACT: &str = "event.raw";

/// The event name of a record when it is a captured event (`event.raw`), else `None`.
#[must_use]
pub(crate) fn captured_event<'a>(
    artifact_name: &str,
    event_name: Option<&'a str>,
) -> Option<&'a str> {
    if artifact_name == EVENT_ARTIFACT {
        event_name
    } else {
        None
    }
}

/// The records a target (or one of its streams) takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Takes {
    /// Every record.
    #[default]
    Everything,
    /// Only captured events with one of these names (exact, case-sensitive, as FreeSWITCH
    /// sends `Event-Name`); every other record is left out.
    Events(BTreeSet<String>),
}

impl Takes {
    /// Only captured events with one of `names`.
    #[must_use]
    pub fn events<I, S>(names: I) -> Takes
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Takes::Events(names.into_iter().map(Into::into).collect())
    }

    /// Whether a record is taken; `event` is its event name if it is a captured event.
    #[must_use]
    pub fn takes(&self, event: Option<&str>) -> bool {
        match self {
            Takes::Everything => true,
            Takes::Events(names) => event.is_some_and(|name| names.contains(name)),
        }
    }

    /// What any of `all` takes: everything if one takes everything, else every name listed.
    #[must_use]
    pub fn union<'a>(all: impl IntoIterator<Item = &'a Takes>) -> Takes {
        let mut names = BTreeSet::new();
        for takes in all {
            match takes {
                Takes::Everything => return Takes::Everything,
                Takes::Events(some) => names.extend(some.iter().cloned()),
            }
        }
        Takes::Events(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_takes_only_captured_events_it_names() {
        let answers = Takes::events(["CHANNEL_ANSWER", "DTMF"]);
        assert!(answers.takes(captured_event("event.raw", Some("DTMF"))));
        assert!(!answers.takes(captured_event("event.raw", Some("CHANNEL_HANGUP"))));
        // The capture's twin of a BACKGROUND_JOB and commands are not events.
        let jobs = Takes::events(["BACKGROUND_JOB"]);
        assert!(!jobs.takes(captured_event("bgapi.complete", Some("BACKGROUND_JOB"))));
        assert!(!answers.takes(captured_event("api.dispatch", None)));
        assert!(Takes::Everything.takes(captured_event("capture.gap", None)));
    }

    #[test]
    fn a_union_takes_everything_if_one_part_does() {
        let jobs = Takes::events(["BACKGROUND_JOB"]);
        let events = Takes::events(["DTMF"]);
        assert_eq!(
            Takes::union([&jobs, &events]),
            Takes::events(["BACKGROUND_JOB", "DTMF"])
        );
        assert_eq!(Takes::union([&jobs, &Takes::Everything]), Takes::Everything);
        assert_eq!(Takes::union([]), Takes::events(Vec::<String>::new()));
    }
}
