//! The sans-IO ESL client session, driven by the synthetic fixture frames.
//!
//! Each test plays one scripted FreeSWITCH conversation: the frames the server would send
//! (decoded from `tests/fixtures/esl/synthetic/`) and the times they arrive, and checks the
//! bytes the session transmits, how it classifies each frame, and its lifecycle outputs.

use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use esl_replay::esl::session::{
    CloseReason, Command, CommandKind, Inbound, Liveness, Origin, Output, Phase, ReplyStatus,
    Session, SessionConfig, SessionError, Subscriptions,
};
use esl_replay::esl::{EslCodec, Frame};
use tokio_util::codec::Decoder;

const JOB: &str = "d1b9f2a6-7c3e-4b5d-9e8f-0a1b2c3d4e5f";

fn fixture(name: &str) -> Vec<Frame> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/esl/synthetic")
        .join(name);
    let mut buf = BytesMut::from(&std::fs::read(&path).unwrap()[..]);
    let mut codec = EslCodec::new();
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
        frames.push(frame);
    }
    assert!(!frames.is_empty(), "{name} holds no frame");
    frames
}

fn one(name: &str) -> Frame {
    fixture(name).remove(0)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn transmitted(session: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect()
}

fn outputs(session: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

/// Greeting, auth, restore of the subscriptions: returns a ready session at t = 1 s.
fn ready(subscriptions: Subscriptions) -> Session {
    let mut s = Session::new(SessionConfig::default(), subscriptions.clone(), secs(0));
    assert_eq!(
        s.handle_frame(&one("01-auth-request.esl"), secs(0)),
        Inbound::Greeting
    );
    assert_eq!(outputs(&mut s), vec![Output::AuthRequested]);
    s.authenticate("ClueCon", secs(0)).unwrap();
    assert_eq!(transmitted(&mut s), vec!["auth ClueCon\n\n"]);
    let reply = s.handle_frame(&one("02-command-reply-auth-ok.esl"), secs(0));
    assert!(matches!(
        reply,
        Inbound::Reply {
            status: ReplyStatus::Ok,
            ..
        }
    ));
    let restore = subscriptions.restore_commands();
    let sent = transmitted(&mut s);
    assert_eq!(sent.len(), restore.len());
    for _ in &restore {
        s.handle_frame(&one("04-command-reply-event-plain-ok.esl"), secs(1));
    }
    let out = outputs(&mut s);
    assert_eq!(out.first(), Some(&Output::Authenticated));
    assert_eq!(out.last(), Some(&Output::Ready));
    assert_eq!(s.phase(), Phase::Ready);
    s
}

#[test]
fn handshake_authenticates_then_restores_subscriptions_and_filters_before_ready() {
    let subs = Subscriptions {
        events: vec!["CHANNEL_CREATE".into(), "HEARTBEAT".into()],
        filters: vec![
            ("Event-Name".into(), "HEARTBEAT".into()),
            ("Event-Name".into(), "CHANNEL_CREATE".into()),
        ],
    };
    let mut s = Session::new(SessionConfig::default(), subs, secs(0));
    assert!(matches!(
        s.send(Command::NoEvents, secs(0)),
        Err(SessionError::NotReady { .. })
    ));
    assert!(matches!(
        s.authenticate("pw", secs(0)),
        Err(SessionError::NotGreeted { .. })
    ));
    s.handle_frame(&one("01-auth-request.esl"), secs(0));
    s.authenticate("secret", secs(0)).unwrap();
    // The pending auth request never holds the password.
    let pending: Vec<_> = s.pending().cloned().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].line(), "auth");
    assert_eq!(pending[0].kind(), CommandKind::Auth);
    assert!(!format!("{s:?}").contains("secret"));
    assert_eq!(transmitted(&mut s), vec!["auth secret\n\n"]);

    s.handle_frame(&one("02-command-reply-auth-ok.esl"), secs(1));
    assert_eq!(s.phase(), Phase::Restoring);
    assert_eq!(
        transmitted(&mut s),
        vec![
            "event plain CHANNEL_CREATE HEARTBEAT\n\n",
            "filter Event-Name HEARTBEAT\n\n",
            "filter Event-Name CHANNEL_CREATE\n\n",
        ]
    );
    s.handle_frame(&one("04-command-reply-event-plain-ok.esl"), secs(1));
    let filter_ok = fixture("20-command-replies-misc.esl").remove(0);
    s.handle_frame(&filter_ok, secs(1));
    assert_eq!(
        s.phase(),
        Phase::Restoring,
        "one restore reply still outstanding"
    );
    let last = s.handle_frame(&filter_ok, secs(1));
    let Inbound::Reply { pending, .. } = last else {
        panic!("{last:?}")
    };
    assert_eq!(pending.origin, Origin::Restore);
    assert_eq!(pending.line(), "filter Event-Name CHANNEL_CREATE");
    assert_eq!(
        outputs(&mut s),
        vec![Output::AuthRequested, Output::Authenticated, Output::Ready]
    );
    assert_eq!(s.phase(), Phase::Ready);
}

#[test]
fn auth_rejection_is_terminal_and_the_notice_that_follows_is_classified() {
    let mut s = Session::new(SessionConfig::default(), Subscriptions::all(), secs(0));
    s.handle_frame(&one("01-auth-request.esl"), secs(0));
    s.authenticate("wrong", secs(0)).unwrap();
    let frames = fixture("03-command-reply-auth-err-then-disconnect.esl");
    assert_eq!(frames.len(), 2);
    let reply = s.handle_frame(&frames[0], secs(0));
    assert!(matches!(
        reply,
        Inbound::Reply {
            status: ReplyStatus::Err,
            ..
        }
    ));
    let closed = CloseReason::AuthRejected {
        reply_text: "-ERR invalid".into(),
    };
    assert_eq!(
        outputs(&mut s),
        vec![Output::AuthRequested, Output::Closed(closed.clone())]
    );
    assert!(!closed.is_retryable());
    assert_eq!(
        s.handle_frame(&frames[1], secs(0)),
        Inbound::Disconnect { linger: false }
    );
    assert!(
        outputs(&mut s).is_empty(),
        "already closed: no second Closed"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn rude_rejection_then_notice_closes_as_rejected() {
    let mut s = Session::new(SessionConfig::default(), Subscriptions::all(), secs(0));
    let frames = fixture("19-rude-rejection-then-disconnect.esl");
    assert_eq!(s.handle_frame(&frames[0], secs(0)), Inbound::RudeRejection);
    assert_eq!(
        s.handle_frame(&frames[1], secs(0)),
        Inbound::Disconnect { linger: false }
    );
    assert_eq!(outputs(&mut s), vec![Output::Closed(CloseReason::Rejected)]);
    assert!(!CloseReason::Rejected.is_retryable());
}

/// Review finding 6: a rude rejection followed by the switch hanging up without a notice
/// is terminal too, not an end of stream to retry.
#[test]
fn rude_rejection_then_end_of_stream_closes_as_rejected() {
    let mut s = Session::new(SessionConfig::default(), Subscriptions::all(), secs(0));
    let frames = fixture("19-rude-rejection-then-disconnect.esl");
    assert_eq!(s.handle_frame(&frames[0], secs(0)), Inbound::RudeRejection);
    s.handle_eof(secs(0));
    assert_eq!(outputs(&mut s), vec![Output::Closed(CloseReason::Rejected)]);
}

#[test]
fn replies_match_commands_first_in_first_out_with_events_interleaved() {
    let mut s = ready(Subscriptions::all());
    let version = s
        .send(
            Command::Api {
                command: "version".into(),
            },
            secs(2),
        )
        .unwrap();
    let unknown = s
        .send(
            Command::Api {
                command: "no_such_cmd".into(),
            },
            secs(2),
        )
        .unwrap();
    let nix = s
        .send(
            Command::NixEvent {
                names: vec!["DTMF".into()],
            },
            secs(2),
        )
        .unwrap();
    assert_eq!(
        transmitted(&mut s),
        vec![
            "api version\n\n",
            "api no_such_cmd\n\n",
            "nixevent DTMF\n\n"
        ]
    );
    // Fixture 21: an event arrives before the api/response.
    let interleaved = fixture("21-interleaved-event-then-api-response.esl");
    let Inbound::Event {
        event_name,
        completes,
    } = s.handle_frame(&interleaved[0], secs(3))
    else {
        panic!("first frame of fixture 21 is an event")
    };
    assert_eq!(event_name.as_deref(), Some("HEARTBEAT"));
    assert_eq!(completes, None);
    let first = s.handle_frame(&interleaved[1], secs(3));
    let Inbound::Reply {
        pending, status, ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!((pending.id, pending.kind()), (version, CommandKind::Api));
    assert_eq!(
        status,
        ReplyStatus::Other,
        "api bodies are not read as +OK/-ERR"
    );
    let second = s.handle_frame(&one("06b-api-response-unknown-command.esl"), secs(3));
    let Inbound::Reply {
        pending, status, ..
    } = second
    else {
        panic!("{second:?}")
    };
    assert_eq!((pending.id, status), (unknown, ReplyStatus::Err));
    let misc = fixture("20-command-replies-misc.esl");
    let third = s.handle_frame(&misc[2], secs(3));
    let Inbound::Reply {
        pending, status, ..
    } = third
    else {
        panic!("{third:?}")
    };
    assert_eq!(
        (pending.id, pending.line(), status),
        (nix, "nixevent DTMF".to_owned(), ReplyStatus::Ok)
    );
    assert_eq!(s.handle_frame(&misc[3], secs(3)), Inbound::UnexpectedReply);
}

#[test]
fn bgapi_carries_our_job_uuid_and_its_background_job_settles_the_job() {
    let mut s = ready(Subscriptions::all());
    let id = s
        .send(
            Command::BgApi {
                command: "originate {origination_uuid=b7e2a1c4}sofia/internal/1002 &park()".into(),
                job_uuid: JOB.into(),
            },
            secs(2),
        )
        .unwrap();
    assert_eq!(
        transmitted(&mut s),
        vec![format!(
            "bgapi originate {{origination_uuid=b7e2a1c4}}sofia/internal/1002 &park()\nJob-UUID: {JOB}\n\n"
        )]
    );
    let ack = s.handle_frame(&one("07-command-reply-bgapi-accepted.esl"), secs(2));
    let Inbound::Reply {
        pending,
        status,
        job_uuid,
    } = ack
    else {
        panic!("{ack:?}")
    };
    assert_eq!(
        (pending.id, status, job_uuid.as_deref()),
        (id, ReplyStatus::Ok, Some(JOB))
    );
    assert_eq!(s.jobs().count(), 1);
    // A BACKGROUND_JOB in JSON (fixture 16) and in plain (fixture 08) carry the same job;
    // only the first settles it.
    let json = s.handle_frame(&one("16-event-json-background-job.esl"), secs(3));
    let Inbound::Event {
        event_name,
        completes: Some(job),
    } = json
    else {
        panic!("{json:?}")
    };
    assert_eq!(event_name.as_deref(), Some("BACKGROUND_JOB"));
    assert_eq!(job.job_uuid, JOB);
    assert!(job.line.starts_with("bgapi originate"));
    let plain = s.handle_frame(&one("08-event-plain-background-job.esl"), secs(3));
    assert!(matches!(
        plain,
        Inbound::Event {
            completes: None,
            ..
        }
    ));
    assert_eq!(s.jobs().count(), 0);
}

#[test]
fn unanswered_jobs_are_orphaned_and_can_move_to_the_next_connection() {
    let config = SessionConfig::default();
    let mut s = ready(Subscriptions::all());
    s.send(
        Command::BgApi {
            command: "status".into(),
            job_uuid: JOB.into(),
        },
        secs(2),
    )
    .unwrap();
    s.handle_frame(&one("07-command-reply-bgapi-accepted.esl"), secs(2));
    s.handle_eof(secs(5));
    let jobs = s.take_jobs();
    assert_eq!(jobs.len(), 1);

    let mut next = ready(Subscriptions::all());
    next.adopt_jobs(jobs);
    let orphan_at = secs(2) + config.job_orphan_timeout;
    assert!(next.poll_timeout().unwrap() <= orphan_at);
    // Keep the connection live with heartbeats while the job ages.
    let heartbeat = one("12-event-plain-heartbeat.esl");
    let mut t = secs(20);
    while t < orphan_at {
        next.handle_frame(&heartbeat, t);
        next.handle_timeout(t);
        t += secs(20);
    }
    next.handle_timeout(orphan_at);
    let out = outputs(&mut next);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::JobOrphaned(j) if j.job_uuid == JOB)),
        "{out:?}"
    );
    assert_eq!(next.jobs().count(), 0);
}

#[test]
fn silence_degrades_probes_with_api_status_and_then_declares_dead() {
    let config = SessionConfig::default();
    let mut s = ready(Subscriptions::all());
    let heartbeat = one("12-event-plain-heartbeat.esl");
    s.handle_frame(&heartbeat, secs(20));
    assert_eq!(s.poll_timeout(), Some(secs(20) + config.idle_timeout));
    s.handle_timeout(secs(30));
    assert!(outputs(&mut s).is_empty(), "early timer calls do nothing");

    let probe_at = secs(20) + config.idle_timeout;
    s.handle_timeout(probe_at);
    assert_eq!(s.liveness(), Liveness::Degraded);
    assert_eq!(transmitted(&mut s), vec!["api status\n\n"]);
    assert_eq!(outputs(&mut s), vec![Output::Liveness(Liveness::Degraded)]);
    assert_eq!(s.pending().next().map(|p| p.origin), Some(Origin::Probe));

    // Any frame revives it; the probe's reply is matched to the probe.
    s.handle_frame(&heartbeat, probe_at + secs(1));
    assert_eq!(s.liveness(), Liveness::Live);
    let reply = s.handle_frame(&one("06-api-response-version.esl"), probe_at + secs(1));
    assert!(matches!(reply, Inbound::Reply { pending, .. } if pending.origin == Origin::Probe));

    // Silence again, and this time the probe goes unanswered.
    let second_probe = probe_at + secs(1) + config.idle_timeout;
    s.handle_timeout(second_probe);
    assert_eq!(transmitted(&mut s), vec!["api status\n\n"]);
    let dead_at = second_probe + config.probe_timeout;
    assert_eq!(s.poll_timeout(), Some(dead_at));
    s.handle_timeout(dead_at);
    let out = outputs(&mut s);
    assert_eq!(out.len(), 5, "{out:?}");
    assert_eq!(out[2], Output::Liveness(Liveness::Dead));
    assert!(matches!(&out[3], Output::Abandoned(p) if p.origin == Origin::Probe));
    assert_eq!(out[4], Output::Closed(CloseReason::Dead));
    assert!(CloseReason::Dead.is_retryable());
}

/// Review finding 4: bytes of a frame still arriving are activity: the idle probe counts
/// from the last bytes, not from the last complete frame.
#[test]
fn bytes_still_arriving_keep_the_session_live() {
    let mut s = ready(Subscriptions::all());
    s.note_activity(secs(30));
    s.handle_timeout(secs(45));
    assert_eq!(transmitted(&mut s), Vec::<String>::new(), "no probe yet");
    assert_eq!(s.poll_timeout(), Some(secs(70)));
    s.handle_timeout(secs(70));
    assert_eq!(transmitted(&mut s), vec!["api status\n\n"]);
    // Bytes during the probe bring the session back to live.
    s.note_activity(secs(75));
    let out = outputs(&mut s);
    assert_eq!(
        out.last(),
        Some(&Output::Liveness(Liveness::Live)),
        "{out:?}"
    );
    s.handle_timeout(secs(81));
    assert_eq!(s.phase(), Phase::Ready, "not dead while bytes flow");
}

#[test]
fn a_command_timeout_closes_the_session_and_abandons_the_rest() {
    let config = SessionConfig::default();
    let mut s = ready(Subscriptions::all());
    let slow = s
        .send(
            Command::Api {
                command: "originate x".into(),
            },
            secs(2),
        )
        .unwrap();
    let after = s.send(Command::NoEvents, secs(3)).unwrap();
    // The noevents deadline (3 + 10 s) comes before the api's (2 + 30 s).
    let first_deadline = secs(3) + config.command_timeout;
    assert_eq!(s.poll_timeout(), Some(first_deadline));
    s.handle_timeout(first_deadline);
    let out = outputs(&mut s);
    let ids: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::TimedOut(p) => Some(("timeout", p.id)),
            Output::Abandoned(p) => Some(("abandoned", p.id)),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![("timeout", after), ("abandoned", slow)]);
    assert_eq!(
        out.last(),
        Some(&Output::Closed(CloseReason::CommandTimeout {
            kind: CommandKind::NoEvents
        }))
    );
    assert!(matches!(
        s.send(Command::NoEvents, secs(20)),
        Err(SessionError::NotReady { .. })
    ));
}

#[test]
fn handshake_timeout_is_retryable() {
    let config = SessionConfig::default();
    let mut s = Session::new(config.clone(), Subscriptions::all(), secs(100));
    assert_eq!(s.poll_timeout(), Some(secs(100) + config.handshake_timeout));
    s.handle_timeout(secs(100) + config.handshake_timeout);
    assert_eq!(
        outputs(&mut s),
        vec![Output::Closed(CloseReason::HandshakeTimeout)]
    );
    assert!(CloseReason::HandshakeTimeout.is_retryable());
}

#[test]
fn restore_error_closes_for_a_retry() {
    let subs = Subscriptions {
        events: vec!["NOPE".into()],
        filters: vec![],
    };
    let mut s = Session::new(SessionConfig::default(), subs, secs(0));
    s.handle_frame(&one("01-auth-request.esl"), secs(0));
    s.authenticate("ClueCon", secs(0)).unwrap();
    s.handle_frame(&one("02-command-reply-auth-ok.esl"), secs(0));
    s.handle_frame(&one("05-command-reply-err-no-keywords.esl"), secs(0));
    let out = outputs(&mut s);
    let Some(Output::Closed(reason)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(
        reason,
        &CloseReason::RestoreFailed {
            command: "event plain NOPE".into(),
            reply_text: "-ERR no keywords supplied".into()
        }
    );
    assert!(reason.is_retryable());
    assert!(!out.contains(&Output::Ready));
}

#[test]
fn disconnect_notices_close_but_linger_notices_do_not() {
    let mut s = ready(Subscriptions::all());
    assert_eq!(
        s.handle_frame(&one("15c-disconnect-notice-linger.esl"), secs(2)),
        Inbound::Disconnect { linger: true }
    );
    assert_eq!(s.phase(), Phase::Ready);
    let pending = s
        .send(
            Command::Api {
                command: "status".into(),
            },
            secs(2),
        )
        .unwrap();
    assert_eq!(
        s.handle_frame(&one("15d-disconnect-notice-shutdown.esl"), secs(3)),
        Inbound::Disconnect { linger: false }
    );
    let out = outputs(&mut s);
    assert!(matches!(&out[0], Output::Abandoned(p) if p.id == pending));
    assert_eq!(out[1], Output::Closed(CloseReason::DisconnectNotice));
    assert_eq!(s.poll_transmit(), None);
}

#[test]
fn subscription_mutations_track_the_desired_state_and_use_nixevent() {
    let mut s = ready(Subscriptions {
        events: vec!["HEARTBEAT".into()],
        filters: vec![],
    });
    let (_, before, after) = s
        .subscribe(vec!["DTMF".into(), "HEARTBEAT".into()], secs(2))
        .unwrap();
    assert_eq!(before.events, vec!["HEARTBEAT"]);
    assert_eq!(after.events, vec!["HEARTBEAT", "DTMF"]);
    let (_, _, after) = s.unsubscribe(vec!["HEARTBEAT".into()], secs(2)).unwrap();
    assert_eq!(after.events, vec!["DTMF"]);
    let (_, _, after) = s
        .add_filter("Unique-ID".into(), "abc".into(), secs(2))
        .unwrap();
    assert_eq!(
        after.filters,
        vec![("Unique-ID".to_owned(), "abc".to_owned())]
    );
    let (_, _, after) = s
        .remove_filter("Unique-ID".into(), "abc".into(), secs(2))
        .unwrap();
    assert!(after.filters.is_empty());
    assert_eq!(
        transmitted(&mut s),
        vec![
            "event plain DTMF HEARTBEAT\n\n",
            "nixevent HEARTBEAT\n\n",
            "filter Unique-ID abc\n\n",
            "filter delete Unique-ID abc\n\n",
        ]
    );
    assert_eq!(s.subscriptions().restore_commands().len(), 1);
}

#[test]
fn line_breaks_in_command_text_are_refused() {
    let mut s = ready(Subscriptions::all());
    let smuggled = Command::Api {
        command: "status\n\napi shutdown".into(),
    };
    assert!(matches!(
        s.send(smuggled, secs(2)),
        Err(SessionError::LineBreakInCommand { .. })
    ));
    assert!(matches!(
        s.send(
            Command::Event {
                format: Default::default(),
                names: vec![]
            },
            secs(2)
        ),
        Err(SessionError::EmptyEventList)
    ));
    assert_eq!(s.poll_transmit(), None);
}

/// Review finding 2: a desired state holding a line break (a `--filter` value with
/// `\n\napi …`) or an empty event name is never sent on restore; the session closes
/// instead of smuggling a command to the switch.
#[test]
fn restore_commands_with_line_breaks_or_empty_names_are_not_sent() {
    let smuggling = Subscriptions {
        events: vec!["ALL".into()],
        filters: vec![(
            "Event-Name".into(),
            "HEARTBEAT\n\napi global_setvar pwned=1".into(),
        )],
    };
    let empty = Subscriptions {
        events: vec![String::new()],
        filters: Vec::new(),
    };
    assert!(matches!(
        smuggling.validate(),
        Err(SessionError::LineBreakInCommand { .. })
    ));
    assert!(matches!(
        empty.validate(),
        Err(SessionError::EmptyText { .. })
    ));
    assert_eq!(Subscriptions::all().validate(), Ok(()));
    for subscriptions in [smuggling, empty] {
        let mut s = Session::new(SessionConfig::default(), subscriptions, secs(0));
        s.handle_frame(&one("01-auth-request.esl"), secs(0));
        s.authenticate("ClueCon", secs(0)).unwrap();
        assert_eq!(transmitted(&mut s), vec!["auth ClueCon\n\n"]);
        s.handle_frame(&one("02-command-reply-auth-ok.esl"), secs(0));
        assert_eq!(
            transmitted(&mut s),
            Vec::<String>::new(),
            "nothing restored"
        );
        let out = outputs(&mut s);
        assert!(
            matches!(
                out.last(),
                Some(Output::Closed(CloseReason::RestoreFailed { .. }))
            ),
            "{out:?}"
        );
        assert_eq!(s.phase(), Phase::Closed);
    }
}

#[test]
fn every_fixture_frame_is_classified_without_panicking() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl/synthetic");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut kinds = std::collections::BTreeMap::new();
    for name in names {
        let mut s = ready(Subscriptions::all());
        for frame in fixture(&name) {
            let kind = match s.handle_frame(&frame, secs(5)) {
                Inbound::Greeting => "greeting",
                Inbound::Reply { .. } => "reply",
                Inbound::UnexpectedReply => "unexpected_reply",
                Inbound::Event { .. } => "event",
                Inbound::Disconnect { .. } => "disconnect",
                Inbound::RudeRejection => "rude_rejection",
                Inbound::Log => "log",
                Inbound::Unknown => "unknown",
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    // Ready sessions have no pending request, so every reply frame is unexpected; the
    // outbound connect reply (fixture 22) is a command/reply too.
    assert_eq!(kinds.get("log"), Some(&1));
    assert_eq!(kinds.get("rude_rejection"), Some(&1));
    assert_eq!(kinds.get("greeting"), Some(&1));
    assert!(kinds.get("event").copied().unwrap_or(0) >= 15, "{kinds:?}");
    assert!(
        kinds.get("disconnect").copied().unwrap_or(0) >= 5,
        "{kinds:?}"
    );
    assert!(
        kinds.get("unexpected_reply").copied().unwrap_or(0) >= 20,
        "{kinds:?}"
    );
    assert_eq!(kinds.get("reply"), None);
}
