//! Writers for real database servers: each on its own connection, one row `(writer, seq)`
//! per autocommit transaction, recording every transaction whose commit was acknowledged
//! with the server's own id for it (PostgreSQL's transaction id, MariaDB's GTID sequence
//! number), so a checker can tell which acknowledged commits a restore must hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long `wait_for` waits for the writers to make progress.
pub const PROGRESS_WAIT_MAX: Duration = Duration::from_secs(60);

/// One connection of one writer.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Insert row `(writer, seq)` in its own transaction; the server's id of the commit.
    async fn commit(&mut self, writer: i32, seq: i64) -> anyhow::Result<u64>;
}

/// One transaction a writer saw acknowledged (its commit returned).
#[derive(Clone, Debug)]
pub struct Ack {
    pub writer: i32,
    pub seq: i64,
    /// The server's id of the commit (PostgreSQL xid, MariaDB GTID sequence number).
    pub txid: u64,
    /// When the statement was sent.
    pub issued: Instant,
    /// When the acknowledgement arrived.
    pub acked: Instant,
}

/// Running writers; `stop` ends them after their current statement.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl Writers {
    /// Writer `first_writer + i` commits through `sinks[i]`, rows `1, 2, ...`, with at most
    /// `budget` commits each (None: until stopped), `pace` apart (None: back to back).
    pub fn start_with_budget(first_writer: i32, sinks: Vec<Box<dyn Sink>>, budget: Option<u64>, pace: Option<Duration>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let tasks = sinks
            .into_iter()
            .zip(first_writer..)
            .map(|(mut sink, writer)| {
                let (stop, acks) = (stop.clone(), acks.clone());
                tokio::spawn(async move {
                    let mut seq = 1i64;
                    while !stop.load(Ordering::SeqCst) && budget.is_none_or(|b| (seq as u64) <= b) {
                        let issued = Instant::now();
                        let txid = sink.commit(writer, seq).await.with_context(|| format!("writer {writer}, row {seq}"))?;
                        acks.lock().unwrap_or_else(|e| e.into_inner()).push(Ack { writer, seq, txid, issued, acked: Instant::now() });
                        seq += 1;
                        if let Some(pace) = pace {
                            tokio::time::sleep(pace).await;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        Writers { stop, tasks, acks }
    }

    pub fn start(first_writer: i32, sinks: Vec<Box<dyn Sink>>) -> Writers {
        Self::start_with_budget(first_writer, sinks, None, None)
    }

    pub fn acknowledged(&self) -> usize {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Wait until `more` transactions beyond the current count are acknowledged (bounded).
    pub async fn wait_for(&self, more: usize) -> anyhow::Result<()> {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + PROGRESS_WAIT_MAX;
        while self.acknowledged() < target {
            if self.tasks.iter().all(|t| t.is_finished()) {
                bail!("the writers stopped after {} of {target} acknowledged transactions", self.acknowledged());
            }
            if Instant::now() > deadline {
                bail!("the writers acknowledged {} of {target} transactions within {PROGRESS_WAIT_MAX:?}", self.acknowledged());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Stop after the statement each writer is running (or its budget); every acknowledged
    /// transaction, or the first writer's error.
    pub async fn stop(self) -> anyhow::Result<Vec<Ack>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut first_error = None;
        for task in self.tasks {
            let outcome = task.await.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(acks)
    }

    /// Wait until every writer has used its budget (bounded), then stop.
    pub async fn finish(self) -> anyhow::Result<Vec<Ack>> {
        let deadline = Instant::now() + PROGRESS_WAIT_MAX;
        while !self.tasks.iter().all(|t| t.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.stop().await
    }
}
