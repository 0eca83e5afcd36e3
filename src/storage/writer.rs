//! One writer thread per RocksDB database, applying batches in submission order with group
//! commit: it takes every batch waiting in its queue and writes them as one `WriteBatch` with
//! one WAL sync, so under load many callers share a sync and none is answered before it.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use dron_actors::store::{Durable, StoreError};
use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

/// Batches merged into one synced write at most.
const MAX_GROUP: usize = 4096;

/// Adds one operation to a batch (reads of the database allowed, e.g. to trim).
pub type AddOp<Op> = fn(&DB, &mut WriteBatch, &Op) -> Result<(), StoreError>;

type Acknowledge = oneshot::Sender<Result<(), StoreError>>;

enum Request<Op> {
    Write(Vec<Op>, Acknowledge),
    /// Answered once every earlier write is applied.
    Barrier(mpsc::Sender<()>),
}

pub struct Writer<Op> {
    requests: Option<mpsc::Sender<Request<Op>>>,
    thread: Option<JoinHandle<()>>,
}

pub fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl<Op: Send + 'static> Writer<Op> {
    pub fn spawn(name: String, db: Arc<DB>, add_op: AddOp<Op>) -> Result<Self, StoreError> {
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(&db, queue, add_op))
            .map_err(backend)?;
        Ok(Writer {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    pub fn submit(&self, ops: Vec<Op>) -> Durable {
        let (done, durable) = oneshot::channel();
        if let Some(requests) = &self.requests {
            // If the writer is gone the sender is dropped and the waiter sees an error.
            let _ = requests.send(Request::Write(ops, done));
        }
        durable
    }

    /// Returns once every batch submitted before the call is applied.
    pub fn barrier(&self) -> Result<(), StoreError> {
        let (done, wait) = mpsc::channel();
        let requests = self
            .requests
            .as_ref()
            .ok_or_else(|| backend("store closed"))?;
        requests
            .send(Request::Barrier(done))
            .map_err(|_| backend("writer stopped"))?;
        wait.recv().map_err(|_| backend("writer stopped"))
    }
}

impl<Op> Drop for Writer<Op> {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it has applied what was queued.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop<Op>(db: &DB, queue: mpsc::Receiver<Request<Op>>, add_op: AddOp<Op>) {
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    while let Ok(first) = queue.recv() {
        let mut group = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(ops, done) => group.push((ops, done)),
                Request::Barrier(done) => {
                    barriers.push(done);
                    break; // a barrier waits for what came before it only
                }
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        let result = write_group(db, &group, &sync, add_op);
        for (_, done) in group {
            let _ = done.send(result.clone());
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

fn write_group<Op>(
    db: &DB,
    group: &[(Vec<Op>, Acknowledge)],
    sync: &WriteOptions,
    add_op: AddOp<Op>,
) -> Result<(), StoreError> {
    if group.is_empty() {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    for (ops, _) in group {
        for op in ops {
            add_op(db, &mut batch, op)?;
        }
    }
    db.write_opt(batch, sync).map_err(backend)
}
