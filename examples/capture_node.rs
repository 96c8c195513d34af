//! Captures a FreeSWITCH node's Event Socket traffic into a store from Rust: every frame
//! becomes a record, with reconnects, backpressure and gap records handled by the capture.
//!
//! `cargo run --release --example capture_node [HOST:PORT [PASSWORD]]` captures that node for
//! five seconds. Without an address it starts the built-in simulator of a busy FreeSWITCH on
//! 127.0.0.1 and captures that.

use std::time::Duration;

use esl_replay::capture::{Capture, CaptureOptions, NodeConfig, NodeSpec, Password};
use esl_replay::record::{Criteria, ReadCursor};
use esl_replay::server::{ServerConfig, Simulator, SimulatorConfig};
use esl_replay::store::LogStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (address, password, _simulator) = match args.next() {
        Some(address) => (
            address,
            args.next().unwrap_or_else(|| "ClueCon".into()),
            None,
        ),
        None => {
            let simulator = std::sync::Arc::new(Simulator::new(SimulatorConfig {
                rate: Some(500.0),
                ..SimulatorConfig::default()
            })?);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?.to_string();
            let running = simulator.serve(listener, ServerConfig::default())?;
            println!("simulating a FreeSWITCH on {address}");
            (address, "ClueCon".into(), Some((simulator, running)))
        }
    };

    let dir = tempfile::tempdir()?;
    let store = LogStore::open(dir.path().join("store"))?;
    let mut config = NodeConfig::new(address);
    config.password = Password::new(password);
    let node = NodeSpec {
        slug: "pbx-01".into(),
        config,
    };
    let capture = Capture::start(vec![node], Box::new(store), CaptureOptions::default())?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("health: {:?}", capture.telemetry().health());

    // Shutting down writes what is queued and hands the store back.
    let (store, exits) = capture.shutdown().await?;
    let records = store.read_from_cursor(&ReadCursor::start(), 100_000, &Criteria::any())?;
    let events = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .count();
    println!(
        "{} records stored, {events} of them events; exits: {exits:?}",
        records.len()
    );
    Ok(())
}
