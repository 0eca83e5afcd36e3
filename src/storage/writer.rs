//! One writer thread per RocksDB database, applying batches in submission order with group
//! commit: it takes every batch waiting in its queue and writes them as one `WriteBatch` with
//! one WAL sync, so under load many callers share a sync and none is answered before it.
//!
//! A shard's coordinator submits its next batch before the previous one is durable, and each
//! batch assumes the ones before it. So after a failed write (a full disk, an I/O error) a
//! shard's writer refuses every later batch until the shard has reloaded what is durable
//! ([`AfterFailure::RefuseUntilReload`]): batch N+1 is never made durable without batch N.
//!
//! A write that fails because the disk is full ([`StoreError::NoSpace`]) marks the store out
//! of space (the `dron_disk_full` gauge, one log line) until a write or a [`Writer::probe`]
//! succeeds again. RocksDB itself stops writing after such a failure and resumes on its own
//! once there is room again (its SstFileManager polls the free space every 5 seconds). A
//! shard's coordinator probes its own store; the writers of the resource and notice stores
//! probe by themselves, every [`PROBE_EVERY`] while out of space and idle, so that the gauge
//! and the log say when space returned even if nothing is written (their callers' writes
//! meanwhile fail at once, answered 507).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use dron_actors::store::{Durable, StoreError};
use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

/// Batches merged into one synced write at most.
const MAX_GROUP: usize = 4096;
/// How often an idle writer that does not refuse after a failure probes a full disk.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Adds one operation to a batch (reads of the database allowed, e.g. to trim).
pub type AddOp<Op> = fn(&DB, &mut WriteBatch, &Op) -> Result<(), StoreError>;

type Acknowledge = oneshot::Sender<Result<(), StoreError>>;

/// What a writer does with batches submitted after one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Refuse them until the next [`Writer::barrier`], the read that starts a reload: for
    /// writers whose caller pipelines batches that build on each other (shards).
    RefuseUntilReload,
    /// Write them: for callers that wait for each batch before sending one that depends on it
    /// (the resource and notice stores).
    Continue,
}

enum Request<Op> {
    Write(Vec<Op>, Acknowledge),
    /// Answered once every earlier write is applied; `reload` ends a refusal.
    Barrier {
        done: mpsc::Sender<()>,
        reload: bool,
    },
    /// A small synced write that changes no data (a WAL record only): answered `Ok` once the
    /// disk takes writes again.
    Probe(mpsc::Sender<Result<(), StoreError>>),
    /// Answered once every earlier write is applied; then writes nothing until `resume` is
    /// dropped (a backup's consistent cut).
    Pause {
        paused: mpsc::Sender<()>,
        resume: mpsc::Receiver<()>,
    },
}

/// While held, its writer writes nothing: what is submitted meanwhile waits in its queue.
pub struct Paused {
    _resume: mpsc::Sender<()>,
}

pub struct Writer<Op> {
    requests: Option<mpsc::Sender<Request<Op>>>,
    thread: Option<JoinHandle<()>>,
    space: Arc<Space>,
}

/// Whether a writer's store is out of space: set by a write that failed for a full disk,
/// cleared by the next write that succeeds.
struct Space {
    /// The store, as `/metrics` and the log name it (`shard-000`, `resource`, `notice`).
    store: String,
    full: AtomicBool,
}

impl Space {
    fn new(writer_name: &str) -> Self {
        let store = writer_name
            .trim_start_matches("shard-writer-")
            .trim_end_matches("-writer");
        metrics::gauge!("dron_disk_full", "store" => store.to_string()).set(0.0);
        Space {
            store: store.to_string(),
            full: AtomicBool::new(false),
        }
    }

    /// Notes what a write attempt says about the disk.
    fn note(&self, result: &Result<(), StoreError>) {
        let full = match result {
            Ok(()) => false,
            Err(error) if error.is_no_space() => true,
            Err(_) => return, // another failure says nothing about space
        };
        if self.full.swap(full, Ordering::AcqRel) == full {
            return;
        }
        let store = self.store.as_str();
        metrics::gauge!("dron_disk_full", "store" => store.to_string()).set(f64::from(full));
        match result {
            Err(error) => tracing::error!(
                store,
                %error,
                "the disk is full: writes to this store are refused (507) until space returns"
            ),
            Ok(()) => tracing::info!(store, "space returned: this store writes again"),
        }
    }
}

/// `map_err(backend("doing something"))`: a RocksDB or I/O error, kept whole.
pub fn backend<E>(doing: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::backend(doing)
}

/// A column family of the database, or [`StoreError::MissingFamily`].
pub fn family<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingFamily(name))
}

/// What has stopped when a writer's queue is closed or gone.
const STOPPED: StoreError = StoreError::Stopped("the store's writer");

impl<Op: Send + 'static> Writer<Op> {
    pub fn spawn(
        name: String,
        db: Arc<DB>,
        add_op: AddOp<Op>,
        after_failure: AfterFailure,
    ) -> Result<Self, StoreError> {
        let (requests, queue) = mpsc::channel();
        let space = Arc::new(Space::new(&name));
        let noted = space.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(&db, queue, add_op, after_failure, &noted))
            .map_err(backend("starting the writer thread"))?;
        Ok(Writer {
            requests: Some(requests),
            thread: Some(thread),
            space,
        })
    }

    /// Whether the last write failed because the disk is full (and none succeeded since).
    pub fn out_of_space(&self) -> bool {
        self.space.full.load(Ordering::Acquire)
    }

    /// Makes a small record durable that changes no data (after every batch submitted
    /// before): `Ok` once the disk takes writes again. It leaves a refusal in place.
    pub fn probe(&self) -> Result<(), StoreError> {
        let (done, wait) = mpsc::channel();
        let requests = self.requests.as_ref().ok_or(STOPPED)?;
        requests.send(Request::Probe(done)).map_err(|_| STOPPED)?;
        wait.recv().map_err(|_| STOPPED)?
    }

    pub fn submit(&self, ops: Vec<Op>) -> Durable {
        let (done, durable) = oneshot::channel();
        if let Some(requests) = &self.requests {
            // If the writer is gone the sender is dropped and the waiter sees an error.
            let _ = requests.send(Request::Write(ops, done));
        }
        durable
    }

    /// Returns once every batch submitted before the call is applied (or refused). It ends a
    /// refusal after a failure: the caller reads the database next and so learns what is
    /// durable.
    pub fn barrier(&self) -> Result<(), StoreError> {
        self.wait(true)
    }

    /// Returns once every batch submitted before the call is applied (or refused), for a read
    /// that must see them; unlike [`Writer::barrier`] it leaves a refusal in place.
    pub fn applied(&self) -> Result<(), StoreError> {
        self.wait(false)
    }

    /// Returns once every batch submitted before the call is applied (or refused); later ones
    /// wait until the answer is dropped. Callers pause a writer for milliseconds (a backup's
    /// checkpoint): its callers' batches queue meanwhile, none is refused.
    pub fn pause(&self) -> Result<Paused, StoreError> {
        let (paused, wait) = mpsc::channel();
        let (resume, resumed) = mpsc::channel();
        let requests = self.requests.as_ref().ok_or(STOPPED)?;
        requests
            .send(Request::Pause {
                paused,
                resume: resumed,
            })
            .map_err(|_| STOPPED)?;
        wait.recv().map_err(|_| STOPPED)?;
        Ok(Paused { _resume: resume })
    }

    fn wait(&self, reload: bool) -> Result<(), StoreError> {
        let (done, wait) = mpsc::channel();
        let requests = self.requests.as_ref().ok_or(STOPPED)?;
        requests
            .send(Request::Barrier { done, reload })
            .map_err(|_| STOPPED)?;
        wait.recv().map_err(|_| STOPPED)
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

fn write_loop<Op>(
    db: &DB,
    queue: mpsc::Receiver<Request<Op>>,
    add_op: AddOp<Op>,
    after_failure: AfterFailure,
    space: &Space,
) {
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    // The failure that later batches are refused for, until the next barrier.
    let mut refusing: Option<Arc<StoreError>> = None;
    let probes_itself = after_failure == AfterFailure::Continue;
    loop {
        let first = match probes_itself && space.full.load(Ordering::Acquire) {
            true => match queue.recv_timeout(PROBE_EVERY) {
                Ok(request) => request,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = probe(db, &sync, space);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            false => match queue.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut group = Vec::new();
        let mut barriers = Vec::new();
        let mut pause = None;
        let mut probe_asked = None;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(ops, done) => group.push((ops, done)),
                Request::Barrier { done, reload } => {
                    barriers.push((done, reload));
                    break; // a barrier waits for what came before it only
                }
                Request::Pause { paused, resume } => {
                    pause = Some((paused, resume));
                    break;
                }
                Request::Probe(done) => {
                    probe_asked = Some(done);
                    break;
                }
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        let result = match &refusing {
            Some(failure) => Err(StoreError::RefusedAfter(failure.clone())),
            None => {
                let written = write_group(db, &group, &sync, add_op);
                if !group.is_empty() {
                    space.note(&written);
                }
                written
            }
        };
        if let Err(failure) = &result
            && refusing.is_none()
            && after_failure == AfterFailure::RefuseUntilReload
        {
            refusing = Some(Arc::new(failure.clone()));
        }
        for (_, done) in group {
            let _ = done.send(result.clone());
        }
        if barriers.iter().any(|(_, reload)| *reload) {
            refusing = None;
        }
        for (done, _) in barriers {
            let _ = done.send(());
        }
        if let Some(done) = probe_asked {
            let _ = done.send(probe(db, &sync, space));
        }
        if let Some((paused, resume)) = pause
            && paused.send(()).is_ok()
        {
            // Until the guard is dropped (the sender gone: an error ends the wait).
            let _ = resume.recv();
        }
    }
}

/// A small synced write that changes no data (a WAL record only), noted.
fn probe(db: &DB, sync: &WriteOptions, space: &Space) -> Result<(), StoreError> {
    let mut record = WriteBatch::default();
    record.put_log_data(b"dron: probing for space");
    let written = db
        .write_opt(record, sync)
        .map_err(backend("probing for space"));
    space.note(&written);
    written
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
    db.write_opt(batch, sync)
        .map_err(backend("writing a batch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test operation: a key to put, or a deliberate failure of the batch it is in.
    enum TestOp {
        Put(&'static str),
        Fail,
        /// Fails as a full disk does (ENOSPC).
        NoSpace,
    }

    fn add_test_op(_: &DB, batch: &mut WriteBatch, op: &TestOp) -> Result<(), StoreError> {
        match op {
            TestOp::Put(key) => batch.put(key.as_bytes(), b"1"),
            TestOp::Fail => {
                let injected = std::io::Error::other("injected failure");
                return Err(backend("adding an operation")(injected));
            }
            TestOp::NoSpace => {
                let full = std::io::Error::from_raw_os_error(28);
                return Err(backend("adding an operation")(full));
            }
        }
        Ok(())
    }

    fn writer(after_failure: AfterFailure) -> (tempfile::TempDir, Arc<DB>, Writer<TestOp>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(DB::open_default(dir.path()).unwrap());
        let writer = Writer::spawn("test-writer".into(), db.clone(), add_test_op, after_failure);
        (dir, db, writer.unwrap())
    }

    #[test]
    fn a_shard_writer_refuses_later_batches_after_a_failure_until_reloaded() {
        let (_dir, db, writer) = writer(AfterFailure::RefuseUntilReload);
        let failed = writer.submit(vec![TestOp::Put("a"), TestOp::Fail]);
        assert!(failed.blocking_recv().unwrap().is_err());
        let after = writer
            .submit(vec![TestOp::Put("b")])
            .blocking_recv()
            .unwrap();
        let refused = after.expect_err("a batch after a failed one must not be written");
        let StoreError::RefusedAfter(earlier) = &refused else {
            panic!("refused for the earlier failure, not {refused:?}");
        };
        assert!(matches!(**earlier, StoreError::Backend { .. }), "{earlier}");
        let cause = refused
            .cause()
            .expect("the earlier failure's cause is kept");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error itself");
        assert_eq!(io.to_string(), "injected failure");
        writer.barrier().unwrap();
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.get(b"b").unwrap(), None);
        // The reload (a barrier, then reads) ends the refusal.
        let reloaded = writer
            .submit(vec![TestOp::Put("c")])
            .blocking_recv()
            .unwrap();
        reloaded.unwrap();
        assert_eq!(db.get(b"c").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_full_disk_marks_the_store_out_of_space_until_a_write_succeeds() {
        let (_dir, db, writer) = writer(AfterFailure::RefuseUntilReload);
        assert!(!writer.out_of_space());
        let failed = writer.submit(vec![TestOp::Put("a"), TestOp::NoSpace]);
        let error = failed.blocking_recv().unwrap().unwrap_err();
        assert!(error.is_no_space(), "{error}");
        assert!(writer.out_of_space());
        // Later batches are refused, for the full disk, in order, and write nothing.
        let later = writer.submit(vec![TestOp::Put("b")]);
        let refused = later.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(refused, StoreError::RefusedAfter(_)) && refused.is_no_space());
        // A probe writes no data; it succeeding means the disk takes writes again.
        writer.probe().unwrap();
        assert!(!writer.out_of_space());
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.get(b"b").unwrap(), None);
        // The probe left the refusal in place: only a reload ends it.
        let still = writer
            .submit(vec![TestOp::Put("c")])
            .blocking_recv()
            .unwrap();
        assert!(still.is_err());
        assert!(!writer.out_of_space(), "a refused batch tried no write");
        writer.barrier().unwrap();
        writer
            .submit(vec![TestOp::Put("d")])
            .blocking_recv()
            .unwrap()
            .unwrap();
        assert_eq!(db.get(b"c").unwrap(), None);
        assert_eq!(db.get(b"d").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_resource_or_notice_writer_probes_a_full_disk_by_itself() {
        let (_dir, db, writer) = writer(AfterFailure::Continue);
        let failed = writer.submit(vec![TestOp::Put("a"), TestOp::NoSpace]);
        assert!(failed.blocking_recv().unwrap().unwrap_err().is_no_space());
        assert!(writer.out_of_space());
        // Nothing is submitted: its own probe finds that the disk takes writes.
        let since = std::time::Instant::now();
        while writer.out_of_space() {
            let waited = since.elapsed();
            assert!(waited < std::time::Duration::from_secs(10), "no probe");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(db.get(b"a").unwrap(), None, "a probe writes no data");
        writer
            .submit(vec![TestOp::Put("b")])
            .blocking_recv()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_paused_writer_applies_what_came_before_and_holds_the_rest() {
        let (_dir, db, writer) = writer(AfterFailure::RefuseUntilReload);
        let before = writer.submit(vec![TestOp::Put("a")]);
        let paused = writer.pause().unwrap();
        assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        let mut during = writer.submit(vec![TestOp::Put("b")]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(during.try_recv().is_err(), "not written while paused");
        assert_eq!(db.get(b"b").unwrap(), None);
        drop(paused);
        before.blocking_recv().unwrap().unwrap();
        during.blocking_recv().unwrap().unwrap();
        assert_eq!(db.get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn other_writers_go_on_after_a_failure() {
        let (_dir, db, writer) = writer(AfterFailure::Continue);
        let failed = writer.submit(vec![TestOp::Fail]);
        assert!(failed.blocking_recv().unwrap().is_err());
        writer
            .submit(vec![TestOp::Put("b")])
            .blocking_recv()
            .unwrap()
            .unwrap();
        assert_eq!(db.get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
    }
}
