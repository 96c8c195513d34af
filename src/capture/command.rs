//! How does a program send one `api` or `bgapi` to FreeSWITCH and get the reply?
//!
//! [`CommandConnection`] opens an authenticated event-socket connection (subscribed only to
//! `BACKGROUND_JOB`, so bgapi results can be awaited) and sends commands one at a time over
//! the sans-IO [`Session`]. It is the building block of the replay executor's ESL injector;
//! it records nothing.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::client::Password;
use crate::esl::session::{
    CloseReason, Command, CommandId, Inbound, Output, ReplyStatus, Session, SessionConfig,
    SessionError, Subscriptions,
};
use crate::esl::{EslCodec, Frame, header_ci};

/// Completed bgapi jobs a connection keeps until [`CommandConnection::background_job`]
/// claims them; past this many, the oldest unclaimed one is dropped.
const MAX_UNCLAIMED_JOBS: usize = 64;

/// Errors of a command connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// TCP connect failed.
    #[error("connect to {address}")]
    Connect {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("esl connection i/o")]
    Io(#[from] std::io::Error),
    /// The stream could not be framed.
    #[error("esl framing")]
    Codec(#[from] crate::esl::Error),
    /// The session closed (auth rejected, disconnect notice, timeout, end of stream).
    #[error("esl session closed: {0}")]
    Closed(CloseReason),
    /// The session refused the command.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// A command's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// `+OK` / `-ERR` / other.
    pub status: ReplyStatus,
    /// The reply frame as received.
    pub frame: Frame,
    /// The bgapi job's UUID (ours, echoed by FreeSWITCH).
    pub job_uuid: Option<String>,
}

impl CommandReply {
    /// `Reply-Text` of a command/reply, or the api/response body, as text.
    #[must_use]
    pub fn text(&self) -> String {
        match header_ci(&self.frame, "Reply-Text") {
            Some(text) => text.to_owned(),
            None => String::from_utf8_lossy(self.frame.body()).into_owned(),
        }
    }
}

/// An authenticated connection for sending commands (see the module docs).
#[derive(Debug)]
pub struct CommandConnection {
    framed: Framed<TcpStream, EslCodec>,
    session: Session,
    origin: Instant,
    jobs: Vec<(String, Frame)>,
}

impl CommandConnection {
    /// Connects to `address`, authenticates and subscribes to `BACKGROUND_JOB`, all within
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// Connect or I/O failures, a rejected password, or the timeout.
    pub async fn connect(
        address: &str,
        password: &Password,
        timeout: Duration,
    ) -> Result<CommandConnection, CommandError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| CommandError::Timeout(timeout))?
            .map_err(|source| CommandError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let origin = Instant::now();
        let config = SessionConfig {
            handshake_timeout: timeout,
            ..SessionConfig::default()
        };
        let subscriptions = Subscriptions {
            events: vec!["BACKGROUND_JOB".into()],
            filters: Vec::new(),
        };
        let mut conn = CommandConnection {
            framed: Framed::new(stream, EslCodec::new()),
            session: Session::new(config, subscriptions, Duration::ZERO),
            origin,
            jobs: Vec::new(),
        };
        let mut ready = false;
        let password = password.clone();
        tokio::time::timeout(timeout, async {
            while !ready {
                conn.flush().await?;
                while let Some(output) = conn.session.poll_output() {
                    match output {
                        Output::AuthRequested => {
                            let now = conn.origin.elapsed();
                            conn.session.authenticate(password.expose(), now)?;
                        }
                        Output::Ready => ready = true,
                        Output::Closed(reason) => return Err(CommandError::Closed(reason)),
                        _ => {}
                    }
                }
                if !ready {
                    conn.flush().await?;
                    conn.read_one().await?;
                }
            }
            Ok::<(), CommandError>(())
        })
        .await
        .map_err(|_| CommandError::Timeout(timeout))??;
        Ok(conn)
    }

    /// Sends `api <command>` and awaits its `api/response`.
    ///
    /// # Errors
    ///
    /// As [`CommandConnection::send`].
    pub async fn api(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandReply, CommandError> {
        self.send(
            Command::Api {
                command: command.to_owned(),
            },
            timeout,
        )
        .await
    }

    /// Sends `bgapi <command>` with a new Job-UUID and awaits the acknowledgement.
    ///
    /// # Errors
    ///
    /// As [`CommandConnection::send`].
    pub async fn bgapi(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandReply, CommandError> {
        let job_uuid = uuid::Uuid::new_v4().to_string();
        self.send(
            Command::BgApi {
                command: command.to_owned(),
                job_uuid,
            },
            timeout,
        )
        .await
    }

    /// Awaits the BACKGROUND_JOB event of a bgapi job.
    ///
    /// # Errors
    ///
    /// The session closed, I/O, or the timeout.
    pub async fn background_job(
        &mut self,
        job_uuid: &str,
        timeout: Duration,
    ) -> Result<Frame, CommandError> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(at) = self.jobs.iter().position(|(j, _)| j == job_uuid) {
                    return Ok(self.jobs.remove(at).1);
                }
                self.read_one().await?;
                self.settle()?;
            }
        })
        .await
        .map_err(|_| CommandError::Timeout(timeout))?
    }

    /// Sends any command and awaits its reply.
    ///
    /// # Errors
    ///
    /// The session refused it or closed, I/O, or the timeout.
    pub async fn send(
        &mut self,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandReply, CommandError> {
        let now = self.origin.elapsed();
        let id = self.session.send(command, now)?;
        self.flush().await?;
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(reply) = self
                    .read_one()
                    .await?
                    .and_then(|(frame, inbound)| match_reply(id, frame, inbound))
                {
                    return Ok(reply);
                }
                self.settle()?;
            }
        })
        .await
        .map_err(|_| CommandError::Timeout(timeout))?
    }

    /// Sends `exit` and closes the socket.
    ///
    /// # Errors
    ///
    /// I/O failures.
    pub async fn close(mut self) -> Result<(), CommandError> {
        let _ = self.session.send(Command::Exit, self.origin.elapsed());
        self.flush().await?;
        self.framed.get_mut().shutdown().await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CommandError> {
        while let Some(bytes) = self.session.poll_transmit() {
            self.framed.get_mut().write_all(&bytes).await?;
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), CommandError> {
        while let Some(output) = self.session.poll_output() {
            if let Output::Closed(reason) = output {
                return Err(CommandError::Closed(reason));
            }
        }
        Ok(())
    }

    /// Reads one frame; remembers completed jobs. `None` at end of stream.
    async fn read_one(&mut self) -> Result<Option<(Frame, Inbound)>, CommandError> {
        match self.framed.next().await {
            Some(frame) => {
                let frame = frame?;
                let inbound = self.session.handle_frame(&frame, self.origin.elapsed());
                if let Inbound::Event {
                    completes: Some(job),
                    ..
                } = &inbound
                {
                    // Kept for `background_job`; a caller that never asks (the injector
                    // sends bgapi and moves on) must not grow the list for the
                    // connection's whole life, so only the latest are kept.
                    if self.jobs.len() >= MAX_UNCLAIMED_JOBS {
                        self.jobs.remove(0);
                    }
                    self.jobs.push((job.job_uuid.clone(), frame.clone()));
                }
                Ok(Some((frame, inbound)))
            }
            None => {
                self.session.handle_eof(self.origin.elapsed());
                self.settle()?;
                Err(CommandError::Closed(CloseReason::Eof))
            }
        }
    }
}

fn match_reply(id: CommandId, frame: Frame, inbound: Inbound) -> Option<CommandReply> {
    match inbound {
        Inbound::Reply {
            pending,
            status,
            job_uuid,
        } if pending.id == id => Some(CommandReply {
            status,
            frame,
            job_uuid,
        }),
        _ => None,
    }
}
