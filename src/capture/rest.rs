//! What is the fs-esl-gateway REST contract, and which ESL command does each call become?
//!
//! The routes ([`routes`]) translate each call into one command sent on a node's capture
//! connection through the [`Gateway`](super::Gateway), so the command and its replies are
//! captured like every other frame (`docs/capture.md`, "fs-esl-gateway REST contract"):
//!
//! | call | ESL command |
//! |---|---|
//! | `POST /api/v1/fs/originate` | `bgapi originate {vars}<endpoint> <&app(args) \| exten [dialplan [context]]>` |
//! | `GET /api/v1/fs/jobs/{job_uuid}` | none: the job's BACKGROUND_JOB result, from the gateway's [`JobStatus`] list |
//! | `POST /api/v1/fs/hangup/{call_uuid}` | `api uuid_kill <uuid> [cause]` |
//! | `GET /api/v1/fs/channels` | `api show channels as json` |
//! | `POST /api/v1/fs/play/{call_uuid}` | `api uuid_broadcast <uuid> <path> [aleg\|bleg\|both]` |
//! | `POST /api/v1/fs/transfer/{call_uuid}` | `api uuid_transfer <uuid> [-bleg\|-both] <dest> [dialplan [context]]` |
//!
//! Every value that reaches a command line is checked first, and a request that fails a
//! check is answered 400 naming the field and the rule, with nothing sent. FreeSWITCH
//! splits these commands' arguments at spaces, reads `'` as quoting and `\` as an escape,
//! and ends an ESL command at a line break; so one-word values ([`token`]) may hold none of
//! these, and the texts that may hold spaces ([`text`]: caller ID, variable values,
//! application arguments) are single-quoted and may hold no `'`, `\` or control character,
//! nor the characters that end their own syntax (`,{}` in a `{var=value}` block, `)` in
//! `&app(args)`). A request can therefore never add an argument, a channel variable or a
//! second ESL command. Unknown JSON fields and query parameters are refused too.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::client::{GatewayCommand, GatewayReply};
use super::http::{Failure, HttpState};
use super::jobs::{JobOutcome, JobStatus};

/// The largest request body accepted (a 413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest value accepted in any field (bytes).
pub const MAX_VALUE_BYTES: usize = 256;

/// The originate timeout when the request names none: FreeSWITCH's own default.
pub const DEFAULT_ORIGINATE_TIMEOUT_SECONDS: u32 = 60;

/// The longest originate timeout accepted: below the session's 120 s horizon for bgapi
/// results, so a job's BACKGROUND_JOB is always awaited.
pub const MAX_ORIGINATE_TIMEOUT_SECONDS: u32 = 100;

/// How much longer than the originate timeout `?wait=true` waits for the job's result.
const WAIT_MARGIN: Duration = Duration::from_secs(10);

/// FreeSWITCH 1.10.12's hangup cause names (`switch_channel.c`, the cause chart), the
/// causes `uuid_kill` accepts by name.
pub const HANGUP_CAUSES: [&str; 82] = [
    "NONE",
    "UNALLOCATED_NUMBER",
    "NO_ROUTE_TRANSIT_NET",
    "NO_ROUTE_DESTINATION",
    "CHANNEL_UNACCEPTABLE",
    "CALL_AWARDED_DELIVERED",
    "NORMAL_CLEARING",
    "USER_BUSY",
    "NO_USER_RESPONSE",
    "NO_ANSWER",
    "SUBSCRIBER_ABSENT",
    "CALL_REJECTED",
    "NUMBER_CHANGED",
    "REDIRECTION_TO_NEW_DESTINATION",
    "EXCHANGE_ROUTING_ERROR",
    "DESTINATION_OUT_OF_ORDER",
    "INVALID_NUMBER_FORMAT",
    "FACILITY_REJECTED",
    "RESPONSE_TO_STATUS_ENQUIRY",
    "NORMAL_UNSPECIFIED",
    "NORMAL_CIRCUIT_CONGESTION",
    "NETWORK_OUT_OF_ORDER",
    "NORMAL_TEMPORARY_FAILURE",
    "SWITCH_CONGESTION",
    "ACCESS_INFO_DISCARDED",
    "REQUESTED_CHAN_UNAVAIL",
    "PRE_EMPTED",
    "FACILITY_NOT_SUBSCRIBED",
    "OUTGOING_CALL_BARRED",
    "INCOMING_CALL_BARRED",
    "BEARERCAPABILITY_NOTAUTH",
    "BEARERCAPABILITY_NOTAVAIL",
    "SERVICE_UNAVAILABLE",
    "BEARERCAPABILITY_NOTIMPL",
    "CHAN_NOT_IMPLEMENTED",
    "FACILITY_NOT_IMPLEMENTED",
    "SERVICE_NOT_IMPLEMENTED",
    "INVALID_CALL_REFERENCE",
    "INCOMPATIBLE_DESTINATION",
    "INVALID_MSG_UNSPECIFIED",
    "MANDATORY_IE_MISSING",
    "MESSAGE_TYPE_NONEXIST",
    "WRONG_MESSAGE",
    "IE_NONEXIST",
    "INVALID_IE_CONTENTS",
    "WRONG_CALL_STATE",
    "RECOVERY_ON_TIMER_EXPIRE",
    "MANDATORY_IE_LENGTH_ERROR",
    "PROTOCOL_ERROR",
    "INTERWORKING",
    "SUCCESS",
    "ORIGINATOR_CANCEL",
    "CRASH",
    "SYSTEM_SHUTDOWN",
    "LOSE_RACE",
    "MANAGER_REQUEST",
    "BLIND_TRANSFER",
    "ATTENDED_TRANSFER",
    "ALLOTTED_TIMEOUT",
    "USER_CHALLENGE",
    "MEDIA_TIMEOUT",
    "PICKED_OFF",
    "USER_NOT_REGISTERED",
    "PROGRESS_TIMEOUT",
    "INVALID_GATEWAY",
    "GATEWAY_DOWN",
    "INVALID_URL",
    "INVALID_PROFILE",
    "NO_PICKUP",
    "SRTP_READ_ERROR",
    "BOWOUT",
    "BUSY_EVERYWHERE",
    "DECLINE",
    "DOES_NOT_EXIST_ANYWHERE",
    "NOT_ACCEPTABLE",
    "UNWANTED",
    "NO_IDENTITY",
    "BAD_IDENTITY_INFO",
    "UNSUPPORTED_CERTIFICATE",
    "INVALID_IDENTITY",
    "STALE_DATE",
    "REJECT_ALL",
];

/// A request value that breaks a rule: answered 400 with the field named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field (`endpoint`, `variables.sip_h_X-Campaign`, `call_uuid`, `body`, …).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// `POST /api/v1/fs/originate`: call `endpoint` and, once it answers, run `application`
/// (with `application_args`) or send it to `extension` in `dialplan` and `context`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateRequest {
    /// The dial string of the leg to call (`sofia/gateway/carrier/15551234567`,
    /// `user/1000`, `loopback/9664`); also accepted as `destination`.
    #[serde(alias = "destination")]
    pub endpoint: String,
    /// An application to run on the answered leg (`park`, `playback`, `bridge`).
    pub application: Option<String>,
    /// The application's argument.
    pub application_args: Option<String>,
    /// A dialplan extension to send the answered leg to (instead of an application).
    pub extension: Option<String>,
    /// The extension's dialplan (FreeSWITCH's default: `XML`).
    pub dialplan: Option<String>,
    /// The extension's context (FreeSWITCH's default: `default`).
    pub context: Option<String>,
    /// `origination_caller_id_name`.
    pub caller_id_name: Option<String>,
    /// `origination_caller_id_number`.
    pub caller_id_number: Option<String>,
    /// More channel variables of the new leg, by name.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// `originate_timeout`: seconds to wait for an answer, 1 to
    /// [`MAX_ORIGINATE_TIMEOUT_SECONDS`] (FreeSWITCH's default: 60).
    pub timeout_seconds: Option<u32>,
    /// The node to send it through (optional with one node).
    pub node: Option<String>,
}

impl OriginateRequest {
    /// The command after `bgapi` (`originate {…}loopback/9664 &park()`).
    ///
    /// # Errors
    ///
    /// [`Invalid`] naming the first field that breaks a rule.
    pub fn command(&self) -> Result<String, Invalid> {
        let mut variables: Vec<(&str, String)> = Vec::new();
        let named = [
            (
                "caller_id_name",
                "origination_caller_id_name",
                &self.caller_id_name,
            ),
            (
                "caller_id_number",
                "origination_caller_id_number",
                &self.caller_id_number,
            ),
        ];
        for (field, variable, value) in named {
            if let Some(value) = value {
                variables.push((variable, variable_value(field, value)?));
            }
        }
        if let Some(seconds) = self.timeout_seconds {
            if !(1..=MAX_ORIGINATE_TIMEOUT_SECONDS).contains(&seconds) {
                return Err(Invalid::new(
                    "timeout_seconds",
                    format!("must be 1 to {MAX_ORIGINATE_TIMEOUT_SECONDS}"),
                ));
            }
            variables.push(("originate_timeout", seconds.to_string()));
        }
        for (name, value) in &self.variables {
            let field = format!("variables.{name}");
            variable_name(&field, name)?;
            if variables.iter().any(|(set, _)| set == name) {
                return Err(Invalid::new(
                    field,
                    "is also set by caller_id_name, caller_id_number or timeout_seconds: give it once",
                ));
            }
            variables.push((name, variable_value(&field, value)?));
        }
        token("endpoint", &self.endpoint)?;
        if let Some(c) = self.endpoint.chars().find(|c| "{}[]<>^".contains(*c)) {
            return Err(Invalid::new(
                "endpoint",
                format!("contains {c:?}: channel variables go in `variables`"),
            ));
        }
        let target = self.target()?;
        let mut command = String::from("originate ");
        if !variables.is_empty() {
            let block: Vec<String> = variables
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            command.push('{');
            command.push_str(&block.join(","));
            command.push('}');
        }
        command.push_str(&self.endpoint);
        command.push(' ');
        command.push_str(&target);
        Ok(command)
    }

    /// `&app(args)` or `exten [dialplan [context]]`.
    fn target(&self) -> Result<String, Invalid> {
        match (&self.application, &self.extension) {
            (Some(application), None) => {
                if self.dialplan.is_some() || self.context.is_some() {
                    return Err(Invalid::new(
                        "dialplan",
                        "dialplan and context go with extension, not application",
                    ));
                }
                name("application", application)?;
                let args = match &self.application_args {
                    Some(args) => quoted("application_args", args, ")")?,
                    None => String::new(),
                };
                Ok(format!("&{application}({args})"))
            }
            (None, Some(extension)) => {
                if self.application_args.is_some() {
                    return Err(Invalid::new(
                        "application_args",
                        "goes with application, not extension",
                    ));
                }
                token("extension", extension)?;
                if extension.starts_with('&') {
                    return Err(Invalid::new(
                        "extension",
                        "starts with '&': use application to run one",
                    ));
                }
                let mut target = extension.clone();
                // FreeSWITCH reads them by position: a context needs its dialplan before it.
                let dialplan = match (&self.dialplan, &self.context) {
                    (Some(dialplan), _) => Some(dialplan.as_str()),
                    (None, Some(_)) => Some("XML"),
                    (None, None) => None,
                };
                if let Some(dialplan) = dialplan {
                    token("dialplan", dialplan)?;
                    target.push(' ');
                    target.push_str(dialplan);
                }
                if let Some(context) = &self.context {
                    token("context", context)?;
                    target.push(' ');
                    target.push_str(context);
                }
                Ok(target)
            }
            (Some(_), Some(_)) => Err(Invalid::new(
                "application",
                "give application or extension, not both",
            )),
            (None, None) => Err(Invalid::new(
                "application",
                "give application (a FreeSWITCH application to run) or extension (a dialplan extension)",
            )),
        }
    }
}

/// A request that acts on one channel: its call UUID comes from the path, the rest from the
/// JSON body, and it becomes one `api` command.
pub trait ChannelRequest: DeserializeOwned + Default {
    /// Whether an empty body stands for the defaults.
    const BODY_OPTIONAL: bool;

    /// The command after `api`.
    ///
    /// # Errors
    ///
    /// [`Invalid`] naming the first field (or `call_uuid`) that breaks a rule.
    fn command(&self, call_uuid: &str) -> Result<String, Invalid>;

    /// The node to send it through (optional with one node).
    fn node(&self) -> Option<&str>;
}

/// `POST /api/v1/fs/hangup/{call_uuid}` (the body may be empty): `uuid_kill <uuid> [CAUSE]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupRequest {
    /// A hangup cause name from [`HANGUP_CAUSES`] (any case); FreeSWITCH's default is
    /// `NORMAL_CLEARING`.
    pub cause: Option<String>,
    /// The node to send it through (optional with one node).
    pub node: Option<String>,
}

impl ChannelRequest for HangupRequest {
    const BODY_OPTIONAL: bool = true;

    fn command(&self, call_uuid: &str) -> Result<String, Invalid> {
        uuid("call_uuid", call_uuid)?;
        let Some(cause) = &self.cause else {
            return Ok(format!("uuid_kill {call_uuid}"));
        };
        let known = HANGUP_CAUSES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(cause))
            .ok_or_else(|| {
                Invalid::new(
                    "cause",
                    format!(
                        "{:?} is not a FreeSWITCH hangup cause (e.g. NORMAL_CLEARING, USER_BUSY, CALL_REJECTED)",
                        cause.chars().take(64).collect::<String>()
                    ),
                )
            })?;
        Ok(format!("uuid_kill {call_uuid} {known}"))
    }

    fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
}

/// Which legs of a bridged call a play or transfer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// The channel named in the path.
    Aleg,
    /// The channel it is bridged to.
    Bleg,
    /// Both.
    Both,
}

/// `POST /api/v1/fs/play/{call_uuid}`: `uuid_broadcast <uuid> <path> [aleg|bleg|both]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayRequest {
    /// What to play: a file path, or anything `uuid_broadcast` plays
    /// (`tone_stream://%(200,0,500)`, `playback::/tmp/x.wav`).
    pub path: String,
    /// Which legs hear it (FreeSWITCH's default: `aleg`, the other leg held).
    pub leg: Option<Leg>,
    /// The node to send it through (optional with one node).
    pub node: Option<String>,
}

impl ChannelRequest for PlayRequest {
    const BODY_OPTIONAL: bool = false;

    fn command(&self, call_uuid: &str) -> Result<String, Invalid> {
        uuid("call_uuid", call_uuid)?;
        token("path", &self.path)?;
        let leg = match self.leg {
            None => "",
            Some(Leg::Aleg) => " aleg",
            Some(Leg::Bleg) => " bleg",
            Some(Leg::Both) => " both",
        };
        Ok(format!("uuid_broadcast {call_uuid} {}{leg}", self.path))
    }

    fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
}

/// `POST /api/v1/fs/transfer/{call_uuid}`:
/// `uuid_transfer <uuid> [-bleg|-both] <dest> [dialplan [context]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The extension to transfer to.
    pub destination: String,
    /// Its dialplan (FreeSWITCH's default: `XML`).
    pub dialplan: Option<String>,
    /// Its context (FreeSWITCH's default: `default`).
    pub context: Option<String>,
    /// Which legs move (default: the channel named in the path).
    pub leg: Option<Leg>,
    /// The node to send it through (optional with one node).
    pub node: Option<String>,
}

impl ChannelRequest for TransferRequest {
    const BODY_OPTIONAL: bool = false;

    fn command(&self, call_uuid: &str) -> Result<String, Invalid> {
        uuid("call_uuid", call_uuid)?;
        token("destination", &self.destination)?;
        if self.destination.starts_with('-') {
            return Err(Invalid::new(
                "destination",
                "starts with '-', which uuid_transfer reads as a leg flag: use leg",
            ));
        }
        let mut command = format!("uuid_transfer {call_uuid} ");
        match self.leg {
            None | Some(Leg::Aleg) => {}
            Some(Leg::Bleg) => command.push_str("-bleg "),
            Some(Leg::Both) => command.push_str("-both "),
        }
        command.push_str(&self.destination);
        let dialplan = match (&self.dialplan, &self.context) {
            (Some(dialplan), _) => Some(dialplan.as_str()),
            (None, Some(_)) => Some("XML"),
            (None, None) => None,
        };
        for (field, value) in [("dialplan", dialplan), ("context", self.context.as_deref())] {
            if let Some(value) = value {
                token(field, value)?;
                command.push(' ');
                command.push_str(value);
            }
        }
        Ok(command)
    }

    fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
}

/// Checks a value that becomes one argument: not empty, at most [`MAX_VALUE_BYTES`], no
/// whitespace or control character, no `'` or `\`.
///
/// # Errors
///
/// [`Invalid`] saying which rule `value` breaks.
pub fn token(field: &str, value: &str) -> Result<(), Invalid> {
    bounded(field, value)?;
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            field,
            format!(
                "contains {c:?}: it must be one word (a space would start another argument, a line break another ESL command)"
            ),
        ));
    }
    no_quoting(field, value)
}

/// Checks a value that is single-quoted on the command line, so it may hold spaces: not
/// empty, at most [`MAX_VALUE_BYTES`], no control character, no `'` or `\`, and none of
/// `also_forbidden`.
///
/// # Errors
///
/// [`Invalid`] saying which rule `value` breaks.
pub fn text(field: &str, value: &str, also_forbidden: &str) -> Result<(), Invalid> {
    bounded(field, value)?;
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Invalid::new(
            field,
            format!(
                "contains the control character {c:?} (a line break would end the ESL command)"
            ),
        ));
    }
    no_quoting(field, value)?;
    if let Some(c) = value.chars().find(|c| also_forbidden.contains(*c)) {
        return Err(Invalid::new(
            field,
            format!("contains {c:?}, which would end its part of the command"),
        ));
    }
    Ok(())
}

fn bounded(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(Invalid::new(
            field,
            format!("is longer than {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn no_quoting(field: &str, value: &str) -> Result<(), Invalid> {
    match value.chars().find(|c| matches!(c, '\'' | '\\')) {
        Some(c) => Err(Invalid::new(
            field,
            format!("contains {c:?}, which FreeSWITCH reads as quoting"),
        )),
        None => Ok(()),
    }
}

/// A [`text`] value, single-quoted when it holds a space (FreeSWITCH drops the quotes).
fn quoted(field: &str, value: &str, also_forbidden: &str) -> Result<String, Invalid> {
    text(field, value, also_forbidden)?;
    Ok(if value.contains(' ') {
        format!("'{value}'")
    } else {
        value.to_owned()
    })
}

/// A value in a `{name=value,…}` block.
fn variable_value(field: &str, value: &str) -> Result<String, Invalid> {
    quoted(field, value, ",{}[]")
}

/// A channel variable name: a letter or `_`, then letters, digits, `_`, `.`, `-`.
fn variable_name(field: &str, value: &str) -> Result<(), Invalid> {
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || value.len() > 128
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Invalid::new(
            field,
            "is not a channel variable name (a letter or _, then letters, digits, _ . -; at most 128)",
        ));
    }
    Ok(())
}

/// An application name: letters, digits and `_`.
fn name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty()
        || value.len() > 64
        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Invalid::new(
            field,
            "is not an application name (letters, digits and _; at most 64)",
        ));
    }
    Ok(())
}

/// A UUID in its usual form (8-4-4-4-12 hexadecimal digits).
fn uuid(field: &str, value: &str) -> Result<(), Invalid> {
    if value.len() == 36 && uuid::Uuid::try_parse(value).is_ok() {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "{:?} is not a UUID (8-4-4-4-12 hexadecimal digits)",
                value.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// The REST routes, answered with the gateway of `HttpState`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/fs/originate", post(originate))
        .route("/api/v1/fs/jobs/{job_uuid}", get(job))
        .route(
            "/api/v1/fs/hangup/{call_uuid}",
            post(on_channel::<HangupRequest>),
        )
        .route("/api/v1/fs/channels", get(channels))
        .route(
            "/api/v1/fs/play/{call_uuid}",
            post(on_channel::<PlayRequest>),
        )
        .route(
            "/api/v1/fs/transfer/{call_uuid}",
            post(on_channel::<TransferRequest>),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

impl From<Invalid> for Failure {
    fn from(error: Invalid) -> Failure {
        Failure::with_body(
            StatusCode::BAD_REQUEST,
            json!({"error": error.to_string(), "field": error.field}),
        )
    }
}

/// The JSON body as `T`; an empty body is `T::default()` when `optional`.
fn body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    optional: bool,
) -> Result<T, Failure> {
    let bytes = body.map_err(|rejection| {
        Failure::new(
            rejection.status(),
            &format!("cannot read the body: {}", rejection.body_text()),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if optional {
            Ok(T::default())
        } else {
            Err(Invalid::new("body", "a JSON object is required").into())
        };
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| Invalid::new("body", format!("not a valid request: {error}")).into())
}

/// The query's parameters; any name not in `allowed` is refused.
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, Invalid> {
    let decode = |s: &str| {
        String::from_utf8_lossy(&crate::esl::event::percent_decode(s.as_bytes())).into_owned()
    };
    let mut parameters = BTreeMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name);
        if !allowed.contains(&name.as_str()) {
            return Err(Invalid::new(
                "query",
                format!("unknown parameter {name:?} (known: {})", allowed.join(", ")),
            ));
        }
        parameters.insert(name, decode(value));
    }
    Ok(parameters)
}

/// The path parameter (a rejection, such as bad percent-encoding, keeps its status).
fn path(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    path.map(|Path(value)| value)
        .map_err(|rejection| Failure::new(rejection.status(), &rejection.body_text()))
}

/// Sends `command` as `api` and answers with FreeSWITCH's reply: 200 for `+OK`, 404 when
/// the channel does not exist, 502 for any other answer.
async fn api(state: &HttpState, node: Option<&str>, command: String) -> Result<Response, Failure> {
    let node = state.gateway.node(node)?.to_owned();
    let reply = state
        .gateway
        .dispatch(Some(&node), GatewayCommand::Api(command.clone()))
        .await?;
    let text = reply.body.trim_end();
    let mut answer = json!({"node": node, "command": command, "reply": text});
    if text.starts_with("+OK") {
        return Ok((StatusCode::OK, axum::Json(answer)).into_response());
    }
    let code = if text.starts_with("-ERR No such channel") || text.starts_with("-ERR invalid uuid")
    {
        answer["error"] = "no such channel".into();
        StatusCode::NOT_FOUND
    } else {
        answer["error"] = "FreeSWITCH refused the command".into();
        StatusCode::BAD_GATEWAY
    };
    Err(Failure::with_body(code, answer))
}

async fn originate(
    State(state): State<HttpState>,
    RawQuery(raw): RawQuery,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let wait = match query(raw.as_deref(), &["wait"])?
        .get("wait")
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true" | "") => true,
        Some(other) => {
            return Err(Invalid::new("wait", format!("{other:?} is not true or false")).into());
        }
    };
    let request: OriginateRequest = body(request, false)?;
    let command = request.command()?;
    let node = state.gateway.node(request.node.as_deref())?.to_owned();
    let reply = state
        .gateway
        .dispatch(Some(&node), GatewayCommand::BgApi(command.clone()))
        .await?;
    let Some(job_uuid) = accepted_job(&reply) else {
        let answer = json!({
            "error": "FreeSWITCH refused the bgapi",
            "node": node,
            "command": command,
            "reply": reply.reply_text,
        });
        return Err(Failure::with_body(StatusCode::BAD_GATEWAY, answer));
    };
    let status = if wait {
        let seconds = request
            .timeout_seconds
            .unwrap_or(DEFAULT_ORIGINATE_TIMEOUT_SECONDS);
        let timeout = Duration::from_secs(seconds.into()) + WAIT_MARGIN;
        state.gateway.jobs().wait(&job_uuid, timeout).await
    } else {
        state.gateway.jobs().get(&job_uuid)
    };
    // The board forgets only beyond thousands of newer jobs; say what was sent regardless.
    let status = status.unwrap_or(JobStatus {
        node,
        command,
        outcome: JobOutcome::Pending,
    });
    let code = if status.outcome == JobOutcome::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(job_document(&job_uuid, &status))).into_response())
}

/// The Job-UUID of an accepted bgapi.
fn accepted_job(reply: &GatewayReply) -> Option<String> {
    if reply.status == "ok" {
        reply.job_uuid.clone()
    } else {
        None
    }
}

/// A job as the REST contract shows it: `status` is `pending`, `completed`, `failed` (the
/// result was `-ERR …` or `-USAGE …`; `error` holds the reason) or `unknown`; a completed
/// originate has its `call_uuid`.
fn job_document(job_uuid: &str, status: &JobStatus) -> Value {
    let mut document = json!({
        "job_uuid": job_uuid,
        "node": status.node,
        "command": status.command,
        "status": "pending",
        "call_uuid": null,
        "result": null,
    });
    match &status.outcome {
        JobOutcome::Pending => {}
        JobOutcome::Unknown => document["status"] = "unknown".into(),
        JobOutcome::Done(result) => {
            let result = result.trim_end();
            document["result"] = result.into();
            let error = result
                .strip_prefix("-ERR")
                .or_else(|| result.strip_prefix("-USAGE"));
            if let Some(error) = error {
                document["status"] = "failed".into();
                document["error"] = error.trim_start_matches(':').trim().into();
            } else {
                document["status"] = "completed".into();
                if status.command.starts_with("originate ")
                    && let Some(call) = result.strip_prefix("+OK ")
                {
                    document["call_uuid"] = call.trim().into();
                }
            }
        }
    }
    document
}

async fn job(
    State(state): State<HttpState>,
    job_uuid: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let job_uuid = path(job_uuid)?;
    uuid("job_uuid", &job_uuid)?;
    let status = state.gateway.jobs().get(&job_uuid).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            &format!(
                "no job {job_uuid} was started through this gateway (or it is long forgotten)"
            ),
        )
    })?;
    Ok(axum::Json(job_document(&job_uuid, &status)).into_response())
}

/// Hangup, play and transfer: the call UUID in the path and a JSON body make one `api`
/// command ([`ChannelRequest::command`]), answered as [`api`] says.
async fn on_channel<R: ChannelRequest>(
    State(state): State<HttpState>,
    call_uuid: Result<Path<String>, PathRejection>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let call_uuid = path(call_uuid)?;
    let request: R = body(request, R::BODY_OPTIONAL)?;
    let command = request.command(&call_uuid)?;
    api(&state, request.node(), command).await
}

/// The switch's `show channels as json` answer as it is (`{"row_count":…,"rows":[…]}`);
/// 502 when it is not JSON (an `-ERR`).
async fn channels(
    State(state): State<HttpState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    let parameters = query(raw.as_deref(), &["node"])?;
    let reply = state
        .gateway
        .dispatch(
            parameters.get("node").map(String::as_str),
            GatewayCommand::Api("show channels as json".into()),
        )
        .await?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&reply.body).is_err() {
        let answer = json!({
            "error": "FreeSWITCH did not answer JSON",
            "reply": reply.body.trim_end(),
        });
        return Err(Failure::with_body(StatusCode::BAD_GATEWAY, answer));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], reply.body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "34fe0fef-0da1-4be0-8920-2cf9b184269b";

    fn originate(json: Value) -> Result<String, Invalid> {
        serde_json::from_value::<OriginateRequest>(json)
            .unwrap()
            .command()
    }

    #[test]
    fn originate_builds_the_command_freeswitch_reads() {
        assert_eq!(
            originate(json!({"endpoint": "loopback/9664", "application": "park"})).unwrap(),
            "originate loopback/9664 &park()"
        );
        assert_eq!(
            originate(json!({
                "destination": "sofia/gateway/carrier/15551234567",
                "extension": "1000",
                "context": "public",
                "caller_id_name": "Jörg Müller",
                "caller_id_number": "+15550001111",
                "timeout_seconds": 30,
                "variables": {"sip_h_X-Campaign": "c42"},
            }))
            .unwrap(),
            "originate {origination_caller_id_name='Jörg Müller',origination_caller_id_number=+15550001111,originate_timeout=30,sip_h_X-Campaign=c42}sofia/gateway/carrier/15551234567 1000 XML public"
        );
        assert_eq!(
            originate(json!({"endpoint": "user/1000", "application": "playback", "application_args": "/tmp/a b.wav"}))
                .unwrap(),
            "originate user/1000 &playback('/tmp/a b.wav')"
        );
    }

    #[test]
    fn originate_refuses_what_could_add_an_argument_a_variable_or_a_command() {
        let refused = [
            (
                json!({"endpoint": "loopback/1\nbgapi fsctl shutdown", "application": "park"}),
                "endpoint",
            ),
            (
                json!({"endpoint": "loopback/1 &park()", "application": "park"}),
                "endpoint",
            ),
            (
                json!({"endpoint": "{origination_uuid=x}loopback/1", "application": "park"}),
                "endpoint",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "caller_id_name": "a',b='c"}),
                "caller_id_name",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "caller_id_name": "a,origination_uuid=x"}),
                "caller_id_name",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "caller_id_name": "a}x"}),
                "caller_id_name",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "application_args": "x) &y("}),
                "application_args",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park(x)"}),
                "application",
            ),
            (
                json!({"endpoint": "loopback/1", "extension": "1000 XML"}),
                "extension",
            ),
            (
                json!({"endpoint": "loopback/1", "extension": "&park()"}),
                "extension",
            ),
            (
                json!({"endpoint": "loopback/1", "extension": "1000", "context": "a\\b"}),
                "context",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "variables": {"a b": "1"}}),
                "variables.a b",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "variables": {"x": "1\r\n"}}),
                "variables.x",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "caller_id_number": "1", "variables": {"origination_caller_id_number": "2"}}),
                "variables.origination_caller_id_number",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "timeout_seconds": 0}),
                "timeout_seconds",
            ),
            (
                json!({"endpoint": "loopback/1", "application": "park", "timeout_seconds": 101}),
                "timeout_seconds",
            ),
            (json!({"endpoint": "loopback/1"}), "application"),
            (
                json!({"endpoint": "loopback/1", "application": "park", "extension": "1"}),
                "application",
            ),
            (json!({"endpoint": "", "application": "park"}), "endpoint"),
            (
                json!({"endpoint": "x".repeat(MAX_VALUE_BYTES + 1), "application": "park"}),
                "endpoint",
            ),
        ];
        for (request, field) in refused {
            let error = originate(request.clone()).unwrap_err();
            assert_eq!(error.field, field, "{request}: {error}");
        }
        assert!(
            serde_json::from_value::<OriginateRequest>(
                json!({"endpoint": "x", "application": "park", "unknown": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn hangup_play_and_transfer_build_their_commands() {
        let hangup = |cause: Option<&str>| HangupRequest {
            cause: cause.map(str::to_owned),
            node: None,
        };
        assert_eq!(
            hangup(None).command(CALL).unwrap(),
            format!("uuid_kill {CALL}")
        );
        assert_eq!(
            hangup(Some("user_busy")).command(CALL).unwrap(),
            format!("uuid_kill {CALL} USER_BUSY")
        );
        assert_eq!(
            hangup(Some("BUSY")).command(CALL).unwrap_err().field,
            "cause"
        );
        assert_eq!(
            hangup(None).command("not-a-uuid").unwrap_err().field,
            "call_uuid"
        );
        assert_eq!(
            hangup(None)
                .command(&format!("{{{CALL}}}"))
                .unwrap_err()
                .field,
            "call_uuid"
        );
        let play = PlayRequest {
            path: "/var/sounds/hello.wav".into(),
            leg: Some(Leg::Both),
            node: None,
        };
        assert_eq!(
            play.command(CALL).unwrap(),
            format!("uuid_broadcast {CALL} /var/sounds/hello.wav both")
        );
        let spaced = PlayRequest {
            path: "/tmp/a.wav both".into(),
            ..play
        };
        assert_eq!(spaced.command(CALL).unwrap_err().field, "path");
        let transfer = TransferRequest {
            destination: "1000".into(),
            context: Some("default".into()),
            leg: Some(Leg::Bleg),
            ..TransferRequest::default()
        };
        assert_eq!(
            transfer.command(CALL).unwrap(),
            format!("uuid_transfer {CALL} -bleg 1000 XML default")
        );
        let flag = TransferRequest {
            destination: "-both".into(),
            ..TransferRequest::default()
        };
        assert_eq!(flag.command(CALL).unwrap_err().field, "destination");
    }

    #[test]
    fn every_hangup_cause_is_a_distinct_upper_case_name() {
        let distinct: std::collections::BTreeSet<&str> = HANGUP_CAUSES.iter().copied().collect();
        assert_eq!(distinct.len(), HANGUP_CAUSES.len());
        assert!(
            HANGUP_CAUSES
                .iter()
                .all(|c| c.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        );
    }

    #[test]
    fn a_job_document_reads_freeswitch_results() {
        let status = |command: &str, outcome: JobOutcome| JobStatus {
            node: "pbx-a".into(),
            command: command.into(),
            outcome,
        };
        let done = job_document(
            "j",
            &status(
                "originate loopback/1 &park()",
                JobOutcome::Done(format!("+OK {CALL}\n")),
            ),
        );
        assert_eq!(
            (done["status"].as_str(), done["call_uuid"].as_str()),
            (Some("completed"), Some(CALL))
        );
        let failed = job_document(
            "j",
            &status(
                "originate loopback/1 &park()",
                JobOutcome::Done("-ERR NO_ROUTE_DESTINATION\n".into()),
            ),
        );
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"], "NO_ROUTE_DESTINATION");
        assert!(failed["call_uuid"].is_null());
        let other = job_document(
            "j",
            &status("status", JobOutcome::Done("UP 0 years".into())),
        );
        assert_eq!(
            (other["status"].as_str(), other["call_uuid"].is_null()),
            (Some("completed"), true)
        );
        assert_eq!(
            job_document("j", &status("status", JobOutcome::Unknown))["status"],
            "unknown"
        );
    }
}
