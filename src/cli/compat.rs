//! Compatibility modes: the capture as a drop-in for a service users already run, taking
//! that service's environment variables and defaults as its own defaults (flags and the
//! configuration file still win). One mode so far, `telephony-event-sync` (FreeSWITCH to
//! Redis Streams); its mapping table is in `docs/forwarding.md`.

use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use serde::Deserialize;

use super::forward::RedisLayout;

/// `--compat` / `compat = "..."`: the service the capture stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Compat {
    /// telephony-event-sync: events and background-job results to two Redis streams, each
    /// with a maximum length and an age limit, configured by environment variables.
    TelephonyEventSync,
}

/// What a compatibility mode sets, before flags and the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompatDefaults {
    /// The switch to capture, `HOST:PORT` (used when no `--esl` or `[[node]]` is given).
    pub(crate) esl: String,
    /// The Redis server to forward to (no password: that is in the layout).
    pub(crate) redis_url: String,
    /// The streams and their trimming.
    pub(crate) layout: RedisLayout,
    /// Where `/health` and `/metrics` are served when `--http` is not given.
    pub(crate) http: String,
}

/// telephony-event-sync's defaults (its `config.go`).
mod tes {
    pub(super) const ESL_HOST: &str = "127.0.0.1";
    pub(super) const ESL_PORT: &str = "8021";
    pub(super) const REDIS_ADDR: &str = "127.0.0.1:6379";
    pub(super) const REDIS_DB: &str = "2";
    pub(super) const STREAM_EVENTS: &str = "freeswitch:telephony:events";
    pub(super) const STREAM_JOBS: &str = "freeswitch:telephony:background-jobs";
    /// `EVENTS_TO_PUSH`: what goes to the events stream.
    pub(super) const EVENTS_TO_PUSH: &str = "CHANNEL_ANSWER,CHANNEL_HANGUP,DTMF,CUSTOM";
    /// `EVENTS_TO_PUBLISH`: what goes to the jobs stream (checked first, so `DTMF` goes
    /// there).
    pub(super) const EVENTS_TO_PUBLISH: &str =
        "BACKGROUND_JOB,CHANNEL_EXECUTE,CHANNEL_EXECUTE_COMPLETE,DTMF,DETECTED_SPEECH";
    pub(super) const MAX_LEN: &str = "10000";
    pub(super) const EVENTS_EXPIRE_TIME: &str = "10m";
    pub(super) const JOBS_EXPIRE_TIME: &str = "1m";
    pub(super) const TRIM_INTERVAL: &str = "10s";
    /// `HEALTH_PORT`: its health endpoint (served here on 127.0.0.1 only; `--http` binds
    /// another address).
    pub(super) const HEALTH_PORT: &str = "9876";
}

impl Compat {
    /// The mode's defaults, read from its environment variables through `env` (an empty
    /// value counts as unset, as the service treats it).
    ///
    /// # Errors
    ///
    /// A variable whose value is not what the service accepts there (a port, a number, a
    /// duration), named with its value.
    pub(crate) fn defaults(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<CompatDefaults> {
        match self {
            Compat::TelephonyEventSync => telephony_event_sync(env),
        }
    }
}

fn telephony_event_sync(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<CompatDefaults> {
    let var = |name: &str, default: &str| {
        env(name)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let parsed = |name: &str, default: &str| -> anyhow::Result<u64> {
        let value = var(name, default);
        value
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{name}={value:?} is not a whole number"))
    };
    let duration = |name: &str, default: &str| -> anyhow::Result<Duration> {
        let value = var(name, default);
        humantime::parse_duration(value.trim())
            .with_context(|| format!("{name}={value:?} is not a duration (e.g. 10m, 90s, 1h30m)"))
    };
    let list = |name: &str, default: &str| -> Vec<String> {
        var(name, default).split(',').map(str::to_owned).collect()
    };
    let port = var("ESL_PORT", tes::ESL_PORT);
    port.trim()
        .parse::<u16>()
        .with_context(|| format!("ESL_PORT={port:?} is not a port number"))?;
    let esl = format!("{}:{}", var("ESL_HOST", tes::ESL_HOST), port.trim());
    let health_port = var("HEALTH_PORT", tes::HEALTH_PORT);
    health_port
        .trim()
        .parse::<u16>()
        .with_context(|| format!("HEALTH_PORT={health_port:?} is not a port number"))?;
    let http = format!("127.0.0.1:{}", health_port.trim());
    let db = parsed("REDIS_REMOTE_DB", tes::REDIS_DB)?;
    let address = var("REDIS_REMOTE_ADDR", tes::REDIS_ADDR);
    let redis_url = if address.contains("://") {
        address
    } else {
        format!("redis://{address}/{db}")
    };
    // A zero length means no MAXLEN, as the service's Redis client reads it.
    let maxlen = |name: &str| parsed(name, tes::MAX_LEN).map(|n| (n > 0).then_some(n));
    let trim_interval = duration("TRIM_INTERVAL", tes::TRIM_INTERVAL)?;
    anyhow::ensure!(
        !trim_interval.is_zero(),
        "TRIM_INTERVAL must be longer than zero"
    );
    let layout = RedisLayout {
        password: env("REDIS_REMOTE_PASSWORD").filter(|value| !value.is_empty()),
        stream: Some(var("STREAM_EVENTS", tes::STREAM_EVENTS)),
        stream_events: Some(list("EVENTS_TO_PUSH", tes::EVENTS_TO_PUSH)),
        maxlen: maxlen("EVENTS_MAX_LEN")?,
        max_age: Some(duration("EVENTS_EXPIRE_TIME", tes::EVENTS_EXPIRE_TIME)?),
        jobs_stream: Some(var("STREAM_JOBS", tes::STREAM_JOBS)),
        jobs_events: Some(list("EVENTS_TO_PUBLISH", tes::EVENTS_TO_PUBLISH)),
        jobs_maxlen: maxlen("JOBS_MAX_LEN")?,
        jobs_max_age: Some(duration("JOBS_EXPIRE_TIME", tes::JOBS_EXPIRE_TIME)?),
        trim_interval: Some(trim_interval),
    };
    Ok(CompatDefaults {
        esl,
        redis_url,
        layout,
        http,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn defaults(vars: &[(&str, &str)]) -> anyhow::Result<CompatDefaults> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Compat::TelephonyEventSync.defaults(&|name| vars.get(name).cloned())
    }

    #[test]
    fn without_variables_the_services_defaults_apply() {
        let d = defaults(&[]).unwrap();
        assert_eq!(d.esl, "127.0.0.1:8021");
        assert_eq!(d.redis_url, "redis://127.0.0.1:6379/2");
        let l = &d.layout;
        assert_eq!(l.stream.as_deref(), Some("freeswitch:telephony:events"));
        assert_eq!(
            l.jobs_stream.as_deref(),
            Some("freeswitch:telephony:background-jobs")
        );
        assert_eq!((l.maxlen, l.jobs_maxlen), (Some(10_000), Some(10_000)));
        assert_eq!(l.max_age, Some(Duration::from_secs(600)));
        assert_eq!(l.jobs_max_age, Some(Duration::from_secs(60)));
        assert_eq!(l.trim_interval, Some(Duration::from_secs(10)));
        assert_eq!(
            l.stream_events.as_deref(),
            Some(&["CHANNEL_ANSWER", "CHANNEL_HANGUP", "DTMF", "CUSTOM"].map(String::from)[..])
        );
        assert_eq!(l.jobs_events.as_ref().map(Vec::len), Some(5));
        assert_eq!(l.password, None);
        assert_eq!(d.http, "127.0.0.1:9876");
    }

    #[test]
    fn the_services_variables_are_read_and_bad_values_named() {
        let d = defaults(&[
            ("ESL_HOST", "10.0.0.5"),
            ("ESL_PORT", "8022"),
            ("REDIS_REMOTE_ADDR", "redis.example:6380"),
            ("REDIS_REMOTE_DB", "0"),
            ("REDIS_REMOTE_PASSWORD", "s3cret"),
            ("STREAM_EVENTS", "ev"),
            ("EVENTS_MAX_LEN", "0"),
            ("JOBS_EXPIRE_TIME", "1h30m"),
            ("EVENTS_TO_PUSH", "DTMF"),
            ("TRIM_INTERVAL", ""),
            ("HEALTH_PORT", "9901"),
        ])
        .unwrap();
        assert_eq!(d.http, "127.0.0.1:9901");
        assert_eq!(d.esl, "10.0.0.5:8022");
        assert_eq!(d.redis_url, "redis://redis.example:6380/0");
        assert_eq!(d.layout.password.as_deref(), Some("s3cret"));
        assert_eq!(d.layout.stream.as_deref(), Some("ev"));
        assert_eq!(d.layout.maxlen, None, "0 is no MAXLEN");
        assert_eq!(d.layout.jobs_max_age, Some(Duration::from_secs(5400)));
        assert_eq!(d.layout.stream_events, Some(vec!["DTMF".to_owned()]));
        assert_eq!(d.layout.trim_interval, Some(Duration::from_secs(10)));

        for (name, value, says) in [
            (
                "ESL_PORT",
                "eighty",
                "ESL_PORT=\"eighty\" is not a port number",
            ),
            (
                "HEALTH_PORT",
                "70000",
                "HEALTH_PORT=\"70000\" is not a port number",
            ),
            (
                "JOBS_MAX_LEN",
                "-1",
                "JOBS_MAX_LEN=\"-1\" is not a whole number",
            ),
            (
                "EVENTS_EXPIRE_TIME",
                "soon",
                "EVENTS_EXPIRE_TIME=\"soon\" is not a duration",
            ),
            (
                "TRIM_INTERVAL",
                "0s",
                "TRIM_INTERVAL must be longer than zero",
            ),
        ] {
            let error = defaults(&[(name, value)]).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{error:#}");
        }
    }
}
