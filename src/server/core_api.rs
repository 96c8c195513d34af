//! How do `serve` and `simulate` answer the core API commands clients send on their own?
//!
//! `fs_cli` asks `api switchname` and `api hostname` at start-up and `api console_complete`
//! on every tab; monitoring scripts ask `status`, `version`, `show channels count`. A real
//! switch answers them from its own state (`mod_commands.c`, `switch_console.c`); these
//! answers come from the served switch's [`SwitchIdentity`] and a [`SessionFigures`]
//! snapshot, with FreeSWITCH's exact texts: plurals in the uptime line, `-ERR no reply`
//! for an unset global variable (the server's empty-body rule), `\n<n> total.\n` for counts,
//! `[%20s]\t` matches and `write=<len>:<word> ` for console completion.

use std::fmt::Write as _;
use std::time::Duration;

/// Who the served switch is (from the captured events' `FreeSWITCH-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchIdentity {
    pub(crate) core_uuid: String,
    pub(crate) hostname: String,
    pub(crate) switchname: String,
    /// `switch_version_full()`, as in `FreeSWITCH-Version` (`1.10.12-release~64bit`).
    pub(crate) version: String,
    pub(crate) ipv4: String,
    pub(crate) ipv6: String,
}

/// The FreeSWITCH release esl-replay speaks for when a capture does not say its version.
pub(crate) const DEFAULT_VERSION: &str = "1.10.12-release~64bit";

impl SwitchIdentity {
    /// `switch_version_revision_human()`: the parts after the first `~`, space-separated,
    /// with the word size last (a release build has no revision: ` 64bit`).
    fn revision_human(&self) -> String {
        let mut parts: Vec<&str> = self.version.split('~').skip(1).collect();
        let bits = parts.pop().unwrap_or_default();
        format!("{} {bits}", parts.join(" "))
    }

    /// `switch_version_full_human()`: `1.10.12-release  64bit` for a release build.
    fn full_human(&self) -> String {
        let base = self.version.split('~').next().unwrap_or_default();
        format!("{base} {}", self.revision_human())
    }
}

/// One open channel, as far as the events tell (the `channels` table's columns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChannelRow {
    pub(crate) uuid: String,
    pub(crate) direction: String,
    pub(crate) created_epoch: u64,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) cid_name: String,
    pub(crate) cid_num: String,
    pub(crate) dest: String,
    pub(crate) call_uuid: String,
    pub(crate) callstate: String,
}

/// The session counters `status` and `show` report, all from one snapshot so they agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SessionFigures {
    pub(crate) uptime: Duration,
    pub(crate) since_startup: u64,
    /// Open channels, oldest first; `status`'s current session count is their number.
    pub(crate) channels: Vec<ChannelRow>,
    pub(crate) peak: u64,
    pub(crate) peak_per_second: u64,
    pub(crate) max_sessions: u64,
    pub(crate) max_per_second: u64,
    pub(crate) idle_cpu: f64,
}

/// The API commands answered here (also what `console_complete` offers), sorted.
pub(crate) const COMMANDS: &[&str] = &[
    "console_complete",
    "global_getvar",
    "hostname",
    "show",
    "status",
    "switchname",
    "uptime",
    "version",
];

/// The columns of FreeSWITCH's `channels` table, as `show channels` prints them.
const CHANNEL_COLUMNS: &str = "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,\
ip_addr,dest,application,application_data,dialplan,context,read_codec,read_rate,read_bit_rate,\
write_codec,write_rate,write_bit_rate,secure,hostname,presence_id,presence_data,accountcode,\
callstate,callee_name,callee_num,callee_direction,call_uuid,sent_callee_name,sent_callee_num,\
initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,initial_dialplan,initial_context";

/// The answer to `api <command>` if it is a core command, `None` otherwise. `figures` is
/// asked only by the commands that report sessions.
pub(crate) fn answer(
    command: &str,
    identity: &SwitchIdentity,
    figures: impl FnOnce() -> SessionFigures,
) -> Option<Vec<u8>> {
    let command = command.trim();
    let (name, args) = command
        .split_once([' ', '\t'])
        .map_or((command, ""), |(n, a)| (n, a.trim()));
    let text = match name {
        "status" => status(identity, &figures()),
        "version" => version(identity, args),
        "hostname" => identity.hostname.clone(),
        "switchname" => identity.switchname.clone(),
        "global_getvar" => global_getvar(identity, args),
        "uptime" => uptime(&figures(), args),
        "show" => show(identity, args, figures)?,
        "console_complete" => console_complete(args),
        _ => return None,
    };
    Some(text.into_bytes())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn status(identity: &SwitchIdentity, figures: &SessionFigures) -> String {
    let up = figures.uptime;
    let secs = up.as_secs();
    let days = secs / 86_400;
    let parts = [
        (days / 365, "year"),
        (days % 365, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
        (u64::from(up.subsec_millis()), "millisecond"),
        (u64::from(up.subsec_micros() % 1000), "microsecond"),
    ];
    let mut out = String::from("UP ");
    for (i, (n, unit)) in parts.iter().enumerate() {
        let separator = if i + 1 == parts.len() { "\n" } else { ", " };
        let _ = write!(out, "{n} {unit}{}{separator}", plural(*n));
    }
    let current = figures.channels.len() as u64;
    let _ = write!(
        out,
        "FreeSWITCH (Version {}) is ready\n\
         {} session(s) since startup\n\
         {current} session(s) - peak {}, last 5min {} \n\
         0 session(s) per Sec out of max {}, peak {}, last 5min {} \n\
         {} session(s) max\n\
         min idle cpu 0.00/{:.2}\n\
         Current Stack Size/Max 240K/8192K\n",
        identity.full_human(),
        figures.since_startup,
        figures.peak,
        figures.peak,
        figures.max_per_second,
        figures.peak_per_second,
        figures.peak_per_second,
        figures.max_sessions,
        figures.idle_cpu,
    );
    out
}

fn version(identity: &SwitchIdentity, args: &str) -> String {
    if args.to_ascii_lowercase().contains("short") {
        let numbers = identity.version.split(['-', '~', '+']).next();
        return format!("{}\n", numbers.unwrap_or_default());
    }
    format!(
        "FreeSWITCH Version {} ({})\n",
        identity.version,
        if args.is_empty() {
            identity.revision_human()
        } else {
            identity.full_human()
        }
    )
}

fn global_getvar(identity: &SwitchIdentity, name: &str) -> String {
    let variables = [
        ("hostname", &identity.hostname),
        ("switchname", &identity.switchname),
        ("core_uuid", &identity.core_uuid),
        ("local_ip_v4", &identity.ipv4),
        ("local_ip_v6", &identity.ipv6),
    ];
    if name.is_empty() {
        return variables
            .iter()
            .map(|(n, v)| format!("{n}={v}\n"))
            .collect();
    }
    // An unset variable prints nothing: the reply becomes `-ERR no reply`.
    variables
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| (*v).clone())
        .unwrap_or_default()
}

fn uptime(figures: &SessionFigures, unit: &str) -> String {
    let micros = u64::try_from(figures.uptime.as_micros()).unwrap_or(u64::MAX);
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "seconds" => 1_000_000,
        "us" | "microseconds" => 1,
        "ms" | "milliseconds" => 1000,
        "m" | "minutes" => 60_000_000,
        "h" | "hours" => 3_600_000_000,
        "d" | "days" => 86_400_000_000,
        _ => {
            return "-USAGE: [us|ms|s|m|h|d|microseconds|milliseconds|seconds|minutes|hours|days]\n"
                .into();
        }
    };
    format!("{}\n", micros / scale)
}

/// `show calls|channels [count]` (and `show status`); other tables are not answered.
fn show(
    identity: &SwitchIdentity,
    args: &str,
    figures: impl FnOnce() -> SessionFigures,
) -> Option<String> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let table = words.first().copied().unwrap_or_default();
    if table.is_empty() {
        return None;
    }
    if table.to_ascii_lowercase().starts_with("status") {
        return Some(status(identity, &figures()));
    }
    let figures = figures();
    let rows: Vec<&ChannelRow> = match table.to_ascii_lowercase().as_str() {
        "channels" => figures.channels.iter().collect(),
        // A call is one row per call leg group (FreeSWITCH's `basic_calls` view).
        "calls" => figures
            .channels
            .iter()
            .filter(|c| c.call_uuid.is_empty() || c.call_uuid == c.uuid)
            .collect(),
        _ => return None,
    };
    let count_only = words
        .get(1)
        .is_some_and(|w| w.eq_ignore_ascii_case("count"));
    let mut out = String::new();
    if !count_only && !rows.is_empty() {
        out.push_str(CHANNEL_COLUMNS);
        out.push('\n');
        for row in &rows {
            let created = time::OffsetDateTime::from_unix_timestamp(
                i64::try_from(row.created_epoch).unwrap_or(0),
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let created = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                created.year(),
                u8::from(created.month()),
                created.day(),
                created.hour(),
                created.minute(),
                created.second()
            );
            let fields = [
                row.uuid.as_str(),
                &row.direction,
                &created,
                &row.created_epoch.to_string(),
                &row.name,
                &row.state,
                &row.cid_name,
                &row.cid_num,
                "",
                &row.dest,
            ];
            out.push_str(&fields.join(","));
            // application .. hostname, then presence .. accountcode, callstate, callee
            // fields, call_uuid, and the initial_* columns: known ones filled.
            let _ = writeln!(
                out,
                ",,,,,,,,,,,,{},,,,{},,,,{},,,,,,,,",
                identity.hostname, row.callstate, row.call_uuid
            );
        }
    }
    let _ = write!(out, "\n{} total.\n", rows.len());
    Some(out)
}

/// `console_complete <line>`: the first word completed against [`COMMANDS`] as
/// `switch_console_complete` prints matches (four to a line) and the text to insert.
fn console_complete(line: &str) -> String {
    let mut out = String::from("\n\n");
    let word = line.trim_start();
    if !word.contains(' ') {
        let matches: Vec<&str> = COMMANDS
            .iter()
            .copied()
            .filter(|c| c.starts_with(word))
            .collect();
        for (i, target) in matches.iter().enumerate() {
            let _ = write!(out, "[{target:>20}]\t");
            if (i + 1) % 4 == 0 {
                out.push('\n');
            }
        }
        out.push_str("\n\n");
        match matches.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(out, "write={}:{one} ", word.len());
            }
            [first, rest @ ..] => {
                let common = rest.iter().fold(first.len(), |n, m| {
                    first
                        .bytes()
                        .zip(m.bytes())
                        .take(n)
                        .take_while(|(a, b)| a == b)
                        .count()
                });
                let _ = write!(out, "write={}:{}", word.len(), &first[..common]);
            }
        }
        return out;
    }
    out.push_str("\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> SwitchIdentity {
        SwitchIdentity {
            core_uuid: "u".into(),
            hostname: "vm".into(),
            switchname: "vm".into(),
            version: DEFAULT_VERSION.into(),
            ipv4: "192.0.2.2".into(),
            ipv6: "::1".into(),
        }
    }

    fn text(command: &str, figures: SessionFigures) -> String {
        String::from_utf8(answer(command, &vm(), || figures).unwrap()).unwrap()
    }

    #[test]
    fn versions_and_names_read_as_freeswitch_writes_them() {
        let none = SessionFigures::default;
        assert_eq!(
            text("version", none()),
            "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"
        );
        assert_eq!(text("version short", none()), "1.10.12\n");
        assert_eq!(text("switchname", none()), "vm");
        assert_eq!(text("global_getvar switch_serial", none()), "");
        assert_eq!(
            text("console_complete sta", none()),
            "\n\n[              status]\t\n\nwrite=3:status "
        );
        assert_eq!(
            text("console_complete s", none()),
            "\n\n[                show]\t[              status]\t[          switchname]\t\n\nwrite=1:s"
        );
        assert!(answer("no_such_command", &vm(), none).is_none());
        assert!(answer("show modules", &vm(), none).is_none());
    }

    #[test]
    fn status_and_show_agree_on_the_open_channels() {
        let figures = SessionFigures {
            uptime: Duration::from_micros(3_601_001_001),
            since_startup: 5,
            channels: vec![ChannelRow {
                uuid: "a".into(),
                call_uuid: "a".into(),
                ..ChannelRow::default()
            }],
            peak: 2,
            max_sessions: 1000,
            max_per_second: 30,
            idle_cpu: 97.5,
            ..SessionFigures::default()
        };
        let status = text("status", figures.clone());
        assert!(
            status.starts_with(
                "UP 0 years, 0 days, 1 hour, 0 minutes, 1 second, 1 millisecond, 1 microsecond\n\
                 FreeSWITCH (Version 1.10.12-release  64bit) is ready\n5 session(s) since startup\n\
                 1 session(s) - peak 2, last 5min 2 \n"
            ),
            "{status}"
        );
        assert!(status.contains("min idle cpu 0.00/97.50\n"));
        assert_eq!(text("show channels count", figures.clone()), "\n1 total.\n");
        let list = text("show channels", figures);
        assert!(list.starts_with("uuid,direction,created,"), "{list}");
        assert!(list.ends_with("\n1 total.\n"));
        assert_eq!(
            list.lines().nth(1).unwrap().split(',').count(),
            CHANNEL_COLUMNS.split(',').count()
        );
        assert_eq!(
            text("show calls count", SessionFigures::default()),
            "\n0 total.\n"
        );
    }
}
