//! What did the client ask for?
//!
//! Client-to-server ESL commands (esl-protocol.md §1.3, §1.5): a command line, optional
//! `Name: value` header lines, an empty line, and for `sendmsg`/`sendevent` an optional
//! `Content-Length` body. [`CommandDecoder`] cuts them out of the byte stream the way
//! FreeSWITCH's `read_packet` does: carriage returns are ignored, so CRLF clients work, and
//! stray newlines before a command are skipped. [`Command::parse`] then classifies the line.

use bytes::{Bytes, BytesMut};

use super::error::Error;

/// Default cap on a command's header block (FreeSWITCH allows 10 MiB; commands are tiny).
pub(crate) const DEFAULT_MAX_COMMAND_HEAD: usize = 1024 * 1024;

/// Cap on a command body (`sendmsg`/`sendevent`), as FreeSWITCH since 2026: 16 MiB.
pub(crate) const DEFAULT_MAX_COMMAND_BODY: usize = 16 * 1024 * 1024;

/// Cap on a command's header block before authentication: `auth`, `userauth` and `exit`
/// are one short line, so an unauthenticated client cannot make the server hold more.
pub const MAX_UNAUTHENTICATED_COMMAND: usize = 4096;

/// One command as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCommand {
    /// The first line, without line ending and surrounding whitespace.
    pub line: String,
    /// The following `Name: value` lines in order.
    pub headers: Vec<(String, String)>,
    /// The body announced by a `Content-Length` header (empty without one).
    pub body: Bytes,
}

impl ClientCommand {
    /// The first header named `name`, compared case-insensitively as FreeSWITCH does.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Cuts client commands out of a byte buffer.
///
/// The default decoder takes header blocks of up to 1 MiB and bodies of up to 16 MiB. The
/// server reads an unauthenticated connection with [`CommandDecoder::unauthenticated`]: a
/// header block of at most [`MAX_UNAUTHENTICATED_COMMAND`] bytes and no body at all, so a
/// client that has not authenticated never makes it hold more than a few KiB.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    max_head: usize,
    max_body: usize,
    /// A parsed head waiting for its body: (head length, command, body length).
    pending: Option<(usize, ClientCommand, usize)>,
    /// How far the search for the current head's end has got, so a head that arrives in
    /// pieces is scanned once, not once per piece.
    scan: HeadScan,
}

/// Where a search for the end of a header block stopped.
#[derive(Debug, Clone, Copy, Default)]
struct HeadScan {
    /// Bytes already searched.
    at: usize,
    /// Whether the last of them ended a line (carriage returns aside).
    after_lf: bool,
}

impl Default for CommandDecoder {
    fn default() -> Self {
        Self {
            max_head: DEFAULT_MAX_COMMAND_HEAD,
            max_body: DEFAULT_MAX_COMMAND_BODY,
            pending: None,
            scan: HeadScan::default(),
        }
    }
}

impl CommandDecoder {
    /// A decoder with the limits of a connection that has not authenticated: a header block
    /// of at most [`MAX_UNAUTHENTICATED_COMMAND`] bytes and no body.
    #[must_use]
    pub fn unauthenticated() -> Self {
        Self {
            max_head: MAX_UNAUTHENTICATED_COMMAND,
            max_body: 0,
            pending: None,
            scan: HeadScan::default(),
        }
    }

    /// Lifts the limits to those of an authenticated connection: a header block of up to
    /// 1 MiB and a `Content-Length` body of up to 16 MiB (FreeSWITCH's cap).
    pub fn authenticated(&mut self) {
        self.max_head = DEFAULT_MAX_COMMAND_HEAD;
        self.max_body = DEFAULT_MAX_COMMAND_BODY;
    }

    /// Takes the next complete command out of `buf`, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`Error::CommandTooLarge`], [`Error::CommandContentLength`], or, for a decoder made
    /// by [`CommandDecoder::unauthenticated`], [`Error::CommandBodyUnauthenticated`] for any
    /// body; the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientCommand>, Error> {
        if self.pending.is_none() {
            if self.scan.at == 0 {
                let skip = buf
                    .iter()
                    .take_while(|&&b| b == b'\n' || b == b'\r')
                    .count();
                let _ = buf.split_to(skip);
            }
            let Some(head_len) = head_end(buf, &mut self.scan) else {
                if buf.len() > self.max_head {
                    return Err(Error::CommandTooLarge { max: self.max_head });
                }
                return Ok(None);
            };
            self.scan = HeadScan::default();
            if head_len > self.max_head {
                return Err(Error::CommandTooLarge { max: self.max_head });
            }
            let head = buf.get(..head_len).unwrap_or_default();
            let mut lines = head
                .split(|&b| b == b'\n')
                .map(|l| String::from_utf8_lossy(l).replace('\r', ""))
                .filter(|l| !l.is_empty());
            let line = lines.next().unwrap_or_default().trim().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    Some((n.trim().to_owned(), v.trim_start().to_owned()))
                })
                .collect();
            let body_len = match headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            {
                None => 0,
                Some((_, v)) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= DEFAULT_MAX_COMMAND_BODY)
                    .ok_or_else(|| Error::CommandContentLength {
                        value: v.chars().take(64).collect(),
                        max: DEFAULT_MAX_COMMAND_BODY,
                    })?,
            };
            if body_len > self.max_body {
                // Only before authentication: the body is never read.
                return Err(Error::CommandBodyUnauthenticated { length: body_len });
            }
            let command = ClientCommand {
                line,
                headers,
                body: Bytes::new(),
            };
            self.pending = Some((head_len, command, body_len));
        }
        let Some((head_len, _, body_len)) = &self.pending else {
            return Ok(None);
        };
        let (head_len, body_len) = (*head_len, *body_len);
        if buf.len() < head_len + body_len {
            return Ok(None);
        }
        let Some((_, mut command, _)) = self.pending.take() else {
            return Ok(None);
        };
        let _ = buf.split_to(head_len);
        command.body = buf.split_to(body_len).freeze();
        Ok(Some(command))
    }
}

/// Length of the header block including its terminating empty line: two line feeds with
/// only carriage returns between them. Resumes where `scan` stopped, and records where
/// this search stops when the end is not there yet.
fn head_end(buf: &[u8], scan: &mut HeadScan) -> Option<usize> {
    let mut after_lf = scan.after_lf;
    let start = scan.at.min(buf.len());
    for (i, &b) in buf.iter().enumerate().skip(start) {
        match b {
            b'\r' => {}
            b'\n' if after_lf => return Some(i + 1),
            b'\n' => after_lf = true,
            _ => after_lf = false,
        }
    }
    *scan = HeadScan {
        at: buf.len(),
        after_lf,
    };
    None
}

/// The event formats a listener can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventFormat {
    /// `text/event-plain`: URL-encoded header lines.
    Plain,
    /// `text/event-json`: one JSON object.
    Json,
    /// `text/event-xml`: an `<event>` document.
    Xml,
}

impl EventFormat {
    /// The keyword used in `event <format> ...` and in the reply text.
    #[must_use]
    pub fn keyword(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }

    /// The frame `Content-Type` of events in this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            EventFormat::Plain => "text/event-plain",
            EventFormat::Json => "text/event-json",
            EventFormat::Xml => "text/event-xml",
        }
    }

    /// The format a keyword names (case-insensitive).
    #[must_use]
    pub fn from_keyword(word: &str) -> Option<EventFormat> {
        [EventFormat::Plain, EventFormat::Json, EventFormat::Xml]
            .into_iter()
            .find(|f| f.keyword().eq_ignore_ascii_case(word))
    }

    /// The format a frame `Content-Type` names.
    #[must_use]
    pub fn from_content_type(content_type: &str) -> Option<EventFormat> {
        [EventFormat::Plain, EventFormat::Json, EventFormat::Xml]
            .into_iter()
            .find(|f| f.content_type().eq_ignore_ascii_case(content_type.trim()))
    }
}

/// A classified command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `auth <password>`.
    Auth(String),
    /// `userauth <user>@<domain>:<password>`.
    UserAuth(String),
    /// `exit` or `...`.
    Exit,
    /// `api <command> [args]`: the command text after `api `.
    Api(String),
    /// `bgapi <command> [args]`: the command text after `bgapi `.
    BgApi(String),
    /// `event [plain|json|xml] <names...>`: the words after `event`.
    Event(Vec<String>),
    /// `nixevent <names...>`.
    NixEvent(Vec<String>),
    /// `noevents`.
    NoEvents,
    /// `myevents [<uuid> [format]]`.
    MyEvents(Vec<String>),
    /// `divert_events on|off`.
    DivertEvents(Option<String>),
    /// `filter ...`: the words after `filter`.
    Filter(Vec<String>),
    /// `sendmsg [<uuid>]`.
    SendMsg(Option<String>),
    /// `sendevent <name>`.
    SendEvent(Option<String>),
    /// `linger [<seconds>]`.
    Linger(Option<String>),
    /// `nolinger`.
    NoLinger,
    /// `log [<level>]`.
    Log(Option<String>),
    /// `nolog`.
    NoLog,
    /// `resume`, `getvar`, `connect`: outbound (session-bound) commands.
    SessionOnly(String),
    /// Anything else.
    Unknown(String),
}

impl Command {
    /// Classifies a command line; the command word is matched case-insensitively.
    #[must_use]
    pub fn parse(line: &str) -> Command {
        let line = line.trim();
        let (word, rest) = match line.split_once([' ', '\t']) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        let words = || -> Vec<String> { rest.split_whitespace().map(str::to_owned).collect() };
        let arg = || (!rest.is_empty()).then(|| rest.to_owned());
        match word.to_ascii_lowercase().as_str() {
            "auth" => Command::Auth(rest.to_owned()),
            "userauth" => Command::UserAuth(rest.to_owned()),
            "exit" | "..." => Command::Exit,
            "api" if !rest.is_empty() => Command::Api(rest.to_owned()),
            "bgapi" if !rest.is_empty() => Command::BgApi(rest.to_owned()),
            "event" => Command::Event(words()),
            "nixevent" => Command::NixEvent(words()),
            "noevents" => Command::NoEvents,
            "myevents" => Command::MyEvents(words()),
            "divert_events" => Command::DivertEvents(arg()),
            "filter" => Command::Filter(words()),
            "sendmsg" => Command::SendMsg(arg()),
            "sendevent" => Command::SendEvent(arg()),
            "linger" => Command::Linger(arg()),
            "nolinger" => Command::NoLinger,
            "log" => Command::Log(arg()),
            "nolog" => Command::NoLog,
            "resume" | "getvar" | "connect" => Command::SessionOnly(word.to_ascii_lowercase()),
            _ => Command::Unknown(line.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<ClientCommand> {
        let mut decoder = CommandDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(c) = decoder.decode(&mut buf).unwrap() {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn commands_are_cut_at_any_split_with_crlf_and_bodies() {
        let wire = b"\r\nauth ClueCon\r\n\r\nbgapi status\nJob-UUID: abc\n\nsendevent CUSTOM\nContent-Length: 3\n\nxyzexit\n\n";
        let commands = decode_all(wire);
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[0].line, "auth ClueCon");
        assert_eq!(commands[1].header("job-uuid"), Some("abc"));
        assert_eq!(&commands[2].body[..], b"xyz");
        assert_eq!(commands[3].line, "exit");
    }

    /// Hostile review: every piece of a head made the decoder search the whole head again
    /// (a 1 MB head sent in 100-byte pieces cost 2.4 s of CPU). Each search now resumes
    /// where the last stopped, in the middle of a CRLF too.
    #[test]
    fn a_head_arriving_in_pieces_is_searched_once() {
        let mut decoder = CommandDecoder::default();
        let mut buf = BytesMut::new();
        let mut head = b"\r\nsendevent CUSTOM\r\n".to_vec();
        for i in 0..1000 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let mut found = None;
        for piece in head.chunks(7) {
            assert!(found.is_none(), "found before its end");
            assert_eq!(decoder.scan.at, buf.len(), "the search restarted");
            buf.extend_from_slice(piece);
            found = decoder.decode(&mut buf).unwrap();
        }
        assert_eq!(found.map(|command| command.headers.len()), Some(1000));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_or_bad_lengths_are_errors() {
        let mut decoder = CommandDecoder::default();
        let mut buf = BytesMut::from(&b"sendmsg\nContent-Length: -1\n\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(Error::CommandContentLength { .. })
        ));
        let mut decoder = CommandDecoder {
            max_head: 8,
            ..CommandDecoder::default()
        };
        let mut buf = BytesMut::from(&b"auth aaaaaaaaaaaa"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(Error::CommandTooLarge { max: 8 })
        ));
    }

    #[test]
    fn before_authentication_only_short_commands_without_a_body_are_read() {
        let mut decoder = CommandDecoder::unauthenticated();
        let mut buf = BytesMut::from(&b"auth ClueCon\n\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap().line,
            "auth ClueCon"
        );
        // A body is refused as soon as its length is read, before a byte of it arrives.
        let mut buf = BytesMut::from(&b"sendevent CUSTOM\nContent-Length: 16777216\n\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(Error::CommandBodyUnauthenticated { length: 16_777_216 })
        ));
        let mut decoder = CommandDecoder::unauthenticated();
        let mut buf = BytesMut::from(vec![b'x'; MAX_UNAUTHENTICATED_COMMAND + 1].as_slice());
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(Error::CommandTooLarge {
                max: MAX_UNAUTHENTICATED_COMMAND
            })
        ));
        // A complete block over the cap is refused too, not only one still growing.
        let mut decoder = CommandDecoder::unauthenticated();
        let mut long = vec![b'x'; MAX_UNAUTHENTICATED_COMMAND + 1];
        long.extend_from_slice(b"\n\n");
        let mut buf = BytesMut::from(long.as_slice());
        assert!(decoder.decode(&mut buf).is_err());
        // Once authenticated, bodies are read.
        let mut decoder = CommandDecoder::unauthenticated();
        decoder.authenticated();
        let mut buf = BytesMut::from(&b"sendevent CUSTOM\nContent-Length: 3\n\nxyz"[..]);
        assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap().body[..], b"xyz");
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(Command::parse("AUTH pw"), Command::Auth("pw".into()));
        assert_eq!(Command::parse("api status"), Command::Api("status".into()));
        assert_eq!(Command::parse("api"), Command::Unknown("api".into()));
        assert_eq!(
            Command::parse("event json ALL"),
            Command::Event(vec!["json".into(), "ALL".into()])
        );
        assert_eq!(Command::parse("..."), Command::Exit);
        assert_eq!(
            Command::parse("linger 30"),
            Command::Linger(Some("30".into()))
        );
        assert_eq!(
            Command::parse("frobnicate"),
            Command::Unknown("frobnicate".into())
        );
    }
}
