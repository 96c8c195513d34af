//! A minimal FreeSWITCH event socket for re-injection tests, on plain threads: it asks for
//! `auth`, accepts any password, answers every command, and records each `api` / `bgapi`
//! command line it receives. An `api` command containing [`NEVER_ANSWERED`] gets no reply
//! at all (a switch still running a slow `originate`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The marker of a command the fake switch never answers.
pub(crate) const NEVER_ANSWERED: &str = "never-answered";

/// A running fake switch; it serves until the test process ends.
pub(crate) struct FakeSwitch {
    address: String,
    commands: Arc<Mutex<Vec<String>>>,
}

impl FakeSwitch {
    /// Starts one on a free local port.
    pub(crate) fn start() -> FakeSwitch {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&commands);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        FakeSwitch { address, commands }
    }

    /// `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Every `api` / `bgapi` line received so far, in order.
    pub(crate) fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
    if stream.write_all(b"Content-Type: auth/request\n\n").is_err() {
        return;
    }
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    loop {
        // A command: its first line, then header lines up to an empty line.
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let first = first.trim_end().to_owned();
        if first.is_empty() {
            continue;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim_end().is_empty() {
                break;
            }
        }
        let reply = if first.starts_with("api ") {
            seen.lock().unwrap().push(first.clone());
            if first.contains(NEVER_ANSWERED) {
                continue;
            }
            let body = "+OK done\n";
            format!(
                "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                body.len()
            )
        } else if first.starts_with("bgapi ") {
            seen.lock().unwrap().push(first.clone());
            let job = "6a1d3c1e-0000-4000-8000-000000000001";
            format!(
                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
            )
        } else {
            "Content-Type: command/reply\nReply-Text: +OK\n\n".to_owned()
        };
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if first == "exit" {
            return;
        }
    }
}
