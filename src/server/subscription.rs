//! Which events does one listener receive?
//!
//! [`Subscription`] is a listener's event set, format and filters, changed by `event`,
//! `nixevent`, `noevents`, `myevents` and `filter` with FreeSWITCH's reply texts and rules
//! (esl-protocol.md §1.5): names match case-insensitively with an optional `SWITCH_EVENT_`
//! prefix, unknown names are skipped, `event` only adds, the format keyword changes the
//! format of every later event, tokens after `CUSTOM` are subclasses, and once any filter
//! exists an event is delivered only if a positive filter matches and no negative one does
//! (`+`/`-` prefixes, `/regex/` values, otherwise case-insensitive equality).

use std::collections::HashSet;

use regex::Regex;

use super::command::EventFormat;
use super::event::{EventParts, ServedEvent};

/// Every event name FreeSWITCH knows (`EVENT_NAMES` in `switch_event.c`), `ALL` last.
pub(crate) const EVENT_NAMES: &[&str] = &[
    "CUSTOM",
    "CLONE",
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "API",
    "LOG",
    "INBOUND_CHAN",
    "OUTBOUND_CHAN",
    "STARTUP",
    "SHUTDOWN",
    "PUBLISH",
    "UNPUBLISH",
    "TALK",
    "NOTALK",
    "SESSION_CRASH",
    "MODULE_LOAD",
    "MODULE_UNLOAD",
    "DTMF",
    "MESSAGE",
    "PRESENCE_IN",
    "NOTIFY_IN",
    "PRESENCE_OUT",
    "PRESENCE_PROBE",
    "MESSAGE_WAITING",
    "MESSAGE_QUERY",
    "ROSTER",
    "CODEC",
    "BACKGROUND_JOB",
    "DETECTED_SPEECH",
    "DETECTED_TONE",
    "PRIVATE_COMMAND",
    "HEARTBEAT",
    "TRAP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "EXE_SCHEDULE",
    "RE_SCHEDULE",
    "RELOADXML",
    "NOTIFY",
    "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE",
    "RECV_MESSAGE",
    "REQUEST_PARAMS",
    "CHANNEL_DATA",
    "GENERAL",
    "COMMAND",
    "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED",
    "SERVER_DISCONNECTED",
    "SEND_INFO",
    "RECV_INFO",
    "RECV_RTCP_MESSAGE",
    "SEND_RTCP_MESSAGE",
    "CALL_SECURE",
    "NAT",
    "RECORD_START",
    "RECORD_STOP",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "CALL_UPDATE",
    "FAILURE",
    "SOCKET_DATA",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA",
    "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT",
    "CALL_DETAIL",
    "DEVICE_STATE",
    "TEXT",
    "SHUTDOWN_REQUESTED",
    "ALL",
];

/// The canonical name of an event keyword, `None` if FreeSWITCH does not know it.
#[must_use]
pub(crate) fn event_name(word: &str) -> Option<&'static str> {
    let word = word
        .get(..13)
        .filter(|p| p.eq_ignore_ascii_case("SWITCH_EVENT_"))
        .and_then(|_| word.get(13..))
        .unwrap_or(word);
    EVENT_NAMES
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(word))
}

/// The events `myevents` subscribes (channel events of one call).
const MYEVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "DTMF",
    "DETECTED_SPEECH",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "RECORD_START",
    "RECORD_STOP",
];

#[derive(Debug, Clone)]
enum Matcher {
    Text(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Filter {
    header: String,
    value: String,
    positive: bool,
    matcher: Matcher,
}

impl Filter {
    fn new(header: &str, value: &str) -> Filter {
        let (positive, rest) = match value.as_bytes().first() {
            Some(b'-') => (false, value.get(1..).unwrap_or_default()),
            Some(b'+') => (true, value.get(1..).unwrap_or_default()),
            _ => (true, value),
        };
        let matcher = rest
            .strip_prefix('/')
            .and_then(|pattern| compile(pattern).ok())
            .map_or_else(|| Matcher::Text(rest.to_owned()), Matcher::Regex);
        Filter {
            header: header.to_owned(),
            value: value.to_owned(),
            positive,
            matcher,
        }
    }

    fn matches(&self, value: &str) -> bool {
        match &self.matcher {
            Matcher::Text(text) => text.eq_ignore_ascii_case(value),
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

/// Compiles `pattern/flags` (the leading `/` already removed), as FreeSWITCH's regex
/// helper reads `/pattern/i`.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    if let Some((body, flags)) = pattern.rsplit_once('/')
        && flags.chars().all(|c| "imsx".contains(c))
    {
        let prefix = if flags.is_empty() {
            String::new()
        } else {
            format!("(?{flags})")
        };
        return Regex::new(&format!("{prefix}{body}"));
    }
    Regex::new(pattern)
}

/// One listener's subscriptions and filters.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    format: EventFormat,
    listening: bool,
    all: bool,
    names: HashSet<&'static str>,
    any_subclass: bool,
    subclasses: HashSet<String>,
    filters: Vec<Filter>,
    my_uuid: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            format: EventFormat::Plain,
            listening: false,
            all: false,
            names: HashSet::new(),
            any_subclass: false,
            subclasses: HashSet::new(),
            filters: Vec::new(),
            my_uuid: None,
        }
    }
}

/// A reply text: `Ok` for `+OK ...`, `Err` for `-ERR ...` (the text includes the prefix).
pub(crate) type Reply = Result<String, String>;

impl Subscription {
    /// The format events are sent in.
    #[must_use]
    pub(crate) fn format(&self) -> EventFormat {
        self.format
    }

    /// Whether any `event`/`myevents` subscription is active.
    #[must_use]
    pub(crate) fn is_listening(&self) -> bool {
        self.listening
    }

    /// `event [plain|json|xml] <names...> [CUSTOM <subclasses...>]`.
    pub(crate) fn event(&mut self, words: &[String]) -> Reply {
        let mut keys = 0;
        let mut custom = false;
        for (i, word) in words.iter().enumerate() {
            // Only the first word may name the format (`event json ...`).
            if i == 0
                && let Some(format) = EventFormat::from_keyword(word)
            {
                self.format = format;
                continue;
            }
            if custom {
                self.subclasses.insert(word.clone());
                continue;
            }
            let Some(name) = event_name(word) else {
                continue;
            };
            keys += 1;
            match name {
                "ALL" => {
                    self.all = true;
                    self.any_subclass = true;
                }
                "CUSTOM" => {
                    custom = true;
                    self.names.insert(name);
                }
                _ => {
                    self.names.insert(name);
                }
            }
        }
        if keys == 0 {
            return Err("-ERR no keywords supplied".into());
        }
        self.listening = true;
        Ok(format!(
            "+OK event listener enabled {}",
            self.format.keyword()
        ))
    }

    /// `nixevent <names...> [CUSTOM <subclasses...>]`.
    pub(crate) fn nixevent(&mut self, words: &[String]) -> Reply {
        let mut keys = 0;
        let mut custom = false;
        for word in words {
            if custom {
                self.subclasses.remove(word.as_str());
                continue;
            }
            let Some(name) = event_name(word) else {
                continue;
            };
            keys += 1;
            match name {
                "ALL" => {
                    self.all = false;
                    self.any_subclass = false;
                    self.names.clear();
                    self.subclasses.clear();
                }
                "CUSTOM" => custom = true,
                _ => {
                    if self.all {
                        // Removing one type from ALL leaves every other type subscribed,
                        // but CUSTOM only for subclasses named explicitly: FreeSWITCH's
                        // ALL covers subclasses without listing them (fixture
                        // inbound-commands: `esl::test` stops after the nixevent).
                        self.all = false;
                        self.any_subclass = false;
                        self.names = EVENT_NAMES
                            .iter()
                            .copied()
                            .filter(|n| *n != "ALL")
                            .collect();
                    }
                    self.names.remove(name);
                }
            }
        }
        if keys == 0 {
            return Err("-ERR no keywords supplied".into());
        }
        self.listening = true;
        Ok("+OK events nixed".into())
    }

    /// `noevents`: drops every subscription (filters stay, as in FreeSWITCH).
    pub(crate) fn noevents(&mut self) -> Reply {
        if !self.listening {
            return Err("-ERR not listening for events".into());
        }
        self.listening = false;
        self.all = false;
        self.any_subclass = false;
        self.names.clear();
        self.subclasses.clear();
        self.my_uuid = None;
        Ok("+OK no longer listening for events".into())
    }

    /// `myevents <uuid> [format]`: the channel events of one call. As in FreeSWITCH, a
    /// UUID followed by any further word (a format) must name a session: `missing` says
    /// when it is known not to.
    pub(crate) fn myevents(
        &mut self,
        words: &[String],
        missing: impl FnOnce(&str) -> bool,
    ) -> Reply {
        if self.my_uuid.is_some() {
            return Err("-ERR aready enabled.".into());
        }
        let Some(uuid) = words.first() else {
            return Err("-ERR invalid uuid".into());
        };
        if words.len() > 1 && missing(uuid) {
            return Err("-ERR invalid uuid".into());
        }
        if let Some(format) = words.get(1).and_then(|w| EventFormat::from_keyword(w)) {
            self.format = format;
        }
        self.my_uuid = Some(uuid.clone());
        self.names.extend(MYEVENTS.iter().copied());
        self.listening = true;
        Ok("+OK Events Enabled".into())
    }

    /// `filter [add] <Header> <value>`, `filter delete <Header> [<value>]`,
    /// `filter delete all`. `rest` is the text after `filter`.
    pub(crate) fn filter(&mut self, rest: &str) -> Reply {
        let (first, tail) = split_word(rest);
        if first.eq_ignore_ascii_case("delete") && !tail.is_empty() {
            let (header, value) = split_word(tail);
            if header.eq_ignore_ascii_case("all") {
                self.filters.clear();
            } else if value.is_empty() {
                self.filters
                    .retain(|f| !f.header.eq_ignore_ascii_case(header));
            } else {
                self.filters
                    .retain(|f| !(f.header.eq_ignore_ascii_case(header) && f.value == value));
            }
            return Ok(format!("+OK filter deleted. [{header}][{value}]"));
        }
        let (header, value) = if first.eq_ignore_ascii_case("add") && !tail.is_empty() {
            split_word(tail)
        } else {
            (first, tail)
        };
        if header.is_empty() || value.is_empty() {
            return Err("-ERR invalid syntax".into());
        }
        self.filters.push(Filter::new(header, value));
        Ok(format!("+OK filter added. [{header}]=[{value}]"))
    }

    /// Whether this listener receives `event`: subscribed by name (and CUSTOM subclass),
    /// bound to its channel under `myevents`, and let through by the filters.
    #[must_use]
    pub(crate) fn wants(&self, event: &ServedEvent) -> bool {
        if !self.listening || !self.subscribed_to(event) {
            return false;
        }
        if self.my_uuid.is_none() && self.filters.is_empty() {
            return true;
        }
        let parts = event.parts();
        if let Some(uuid) = &self.my_uuid
            && text(&parts, "Unique-ID").as_deref() != Some(uuid.as_str())
        {
            return false;
        }
        self.passes_filters(&parts)
    }

    fn subscribed_to(&self, event: &ServedEvent) -> bool {
        if self.all {
            return true;
        }
        let Some(name) = event_name(event.name()) else {
            return false;
        };
        if !self.names.contains(name) {
            return false;
        }
        match (name, event.subclass()) {
            ("CUSTOM", Some(sub)) => self.any_subclass || self.subclasses.contains(sub),
            _ => true,
        }
    }

    fn passes_filters(&self, parts: &EventParts) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let mut send = false;
        for filter in &self.filters {
            let Some(value) = text(parts, &filter.header) else {
                continue;
            };
            if filter.matches(&value) {
                if !filter.positive {
                    return false;
                }
                send = true;
            }
        }
        send
    }
}

fn text(parts: &EventParts, name: &str) -> Option<String> {
    parts
        .header(name)
        .map(|v| String::from_utf8_lossy(&v.joined()).into_owned())
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn plain(name: &str, extra: &str) -> ServedEvent {
        let body = format!("Event-Name: {name}\n{extra}\n");
        ServedEvent::from_body(EventFormat::Plain, Bytes::from(body))
    }

    #[test]
    fn event_adds_and_nixevent_removes() {
        let mut sub = Subscription::default();
        assert_eq!(
            sub.event(&words("plain nonsense")),
            Err("-ERR no keywords supplied".into())
        );
        assert_eq!(
            sub.event(&words("json switch_event_heartbeat CHANNEL_CREATE")),
            Ok("+OK event listener enabled json".into())
        );
        assert!(sub.wants(&plain("HEARTBEAT", "")));
        assert!(!sub.wants(&plain("DTMF", "")));
        sub.event(&words("plain DTMF")).unwrap();
        assert_eq!(sub.format(), EventFormat::Plain);
        assert!(sub.wants(&plain("CHANNEL_CREATE", "")), "event only adds");
        assert_eq!(
            sub.nixevent(&words("HEARTBEAT")),
            Ok("+OK events nixed".into())
        );
        assert!(!sub.wants(&plain("HEARTBEAT", "")));
        assert_eq!(
            sub.noevents(),
            Ok("+OK no longer listening for events".into())
        );
        assert_eq!(sub.noevents(), Err("-ERR not listening for events".into()));
        assert!(!sub.wants(&plain("DTMF", "")));
    }

    #[test]
    fn all_and_custom_subclasses() {
        let mut sub = Subscription::default();
        sub.event(&words("plain CUSTOM sofia::register")).unwrap();
        assert!(sub.wants(&plain("CUSTOM", "Event-Subclass: sofia%3A%3Aregister")));
        assert!(!sub.wants(&plain("CUSTOM", "Event-Subclass: sofia%3A%3Aexpire")));
        let mut all = Subscription::default();
        all.event(&words("plain ALL")).unwrap();
        assert!(all.wants(&plain("CUSTOM", "Event-Subclass: anything")));
        all.nixevent(&words("DTMF")).unwrap();
        assert!(!all.wants(&plain("DTMF", "")));
        assert!(all.wants(&plain("HEARTBEAT", "")));
        assert!(
            !all.wants(&plain("CUSTOM", "Event-Subclass: esl%3A%3Atest")),
            "after a nixevent, ALL no longer covers unnamed CUSTOM subclasses"
        );
        assert!(
            all.wants(&plain("CUSTOM", "")),
            "CUSTOM without a subclass stays"
        );
        let mut json_late = Subscription::default();
        json_late.event(&words("CHANNEL_CREATE json")).unwrap();
        assert_eq!(json_late.format(), EventFormat::Plain, "format only first");
    }

    #[test]
    fn filters_need_a_positive_match_and_negatives_veto() {
        let mut sub = Subscription::default();
        sub.event(&words("plain ALL")).unwrap();
        assert_eq!(
            sub.filter("Unique-ID abc"),
            Ok("+OK filter added. [Unique-ID]=[abc]".into())
        );
        assert!(
            sub.wants(&plain("DTMF", "Unique-ID: ABC")),
            "case-insensitive"
        );
        assert!(
            !sub.wants(&plain("HEARTBEAT", "")),
            "no filtered header: hidden"
        );
        sub.filter("Event-Name /^HEART/").unwrap();
        assert!(sub.wants(&plain("HEARTBEAT", "")));
        sub.filter("add Caller-Caller-ID-Number -1001").unwrap();
        assert!(!sub.wants(&plain(
            "DTMF",
            "Unique-ID: abc\nCaller-Caller-ID-Number: 1001"
        )));
        assert_eq!(
            sub.filter("delete Unique-ID abc"),
            Ok("+OK filter deleted. [Unique-ID][abc]".into())
        );
        assert!(!sub.wants(&plain("DTMF", "Unique-ID: abc")));
        assert_eq!(
            sub.filter("delete all"),
            Ok("+OK filter deleted. [all][]".into())
        );
        assert!(sub.wants(&plain("DTMF", "")));
        assert_eq!(sub.filter("Unique-ID"), Err("-ERR invalid syntax".into()));
        let mut negative_only = Subscription::default();
        negative_only.event(&words("plain ALL")).unwrap();
        negative_only.filter("Event-Name -DTMF").unwrap();
        assert!(
            !negative_only.wants(&plain("HEARTBEAT", "")),
            "only negatives block all"
        );
    }

    #[test]
    fn myevents_binds_one_channel() {
        let mut sub = Subscription::default();
        assert_eq!(
            sub.myevents(&[], |_| false),
            Err("-ERR invalid uuid".into())
        );
        assert_eq!(
            sub.myevents(&words("u1 json"), |_| false),
            Ok("+OK Events Enabled".into())
        );
        assert_eq!(sub.format(), EventFormat::Json);
        assert!(sub.wants(&plain("CHANNEL_ANSWER", "Unique-ID: u1")));
        assert!(!sub.wants(&plain("CHANNEL_ANSWER", "Unique-ID: u2")));
        assert!(!sub.wants(&plain("HEARTBEAT", "")));
        assert_eq!(
            sub.myevents(&words("u1"), |_| false),
            Err("-ERR aready enabled.".into())
        );
    }
}
