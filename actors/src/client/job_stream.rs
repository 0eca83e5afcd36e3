//! Every job in name order, a batch at a time: `GET /scheduler/jobs` at a million jobs without
//! the whole list in memory.
//!
//! The stream starts with every shard's job names (a name is tens of bytes; a job's record with
//! its JSON is about a hundred times that), sorts each shard's names off the coordinators, then
//! reads records shard by shard, `batch` names at a time, and merges the shards' batches by
//! name. The list is not a snapshot: a job created after the names were read is not in it, and
//! one deleted before its batch was read is left out.

use std::collections::VecDeque;

use dron_model::job::JobRecord;
use ractor::ActorRef;

use super::{Asked, CALL_TIMEOUT, Callee, answer};
use crate::coordinator::CoordinatorMsg;
use crate::error::CommandError;
use crate::router::fanout;

/// One shard's part of the stream: the names still to read, and records read but not yet
/// handed out.
struct ShardCursor {
    shard: ActorRef<CoordinatorMsg>,
    names: std::vec::IntoIter<String>,
    read: VecDeque<JobRecord>,
}

impl ShardCursor {
    fn exhausted(&self) -> bool {
        self.read.is_empty() && self.names.len() == 0
    }

    /// Whether its records must be topped up before the merge can go on: the merge may hand
    /// out a record only while every shard that has more to give has one waiting.
    fn needs_reading(&self) -> bool {
        self.read.is_empty() && self.names.len() > 0
    }
}

pub struct JobStream {
    shards: Vec<ShardCursor>,
    batch: usize,
}

impl JobStream {
    /// A stream over `shards`, whose job names are `names` (one list per shard, in the same
    /// order), reading `batch` records from a shard at a time.
    pub(super) fn new(
        shards: Vec<ActorRef<CoordinatorMsg>>,
        names: Vec<Vec<String>>,
        batch: usize,
    ) -> Self {
        let shards = shards
            .into_iter()
            .zip(names)
            .map(|(shard, mut names)| {
                names.sort_unstable();
                ShardCursor {
                    shard,
                    names: names.into_iter(),
                    read: VecDeque::new(),
                }
            })
            .collect();
        JobStream {
            shards,
            batch: batch.max(1),
        }
    }

    /// The next jobs in name order (at most about `batch` of them), or None at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<JobRecord>>, CommandError> {
        loop {
            self.read_where_needed().await?;
            if self.shards.iter().all(ShardCursor::exhausted) {
                return Ok(None);
            }
            let merged = self.merge();
            // Empty only when every name a shard was asked for had been deleted meanwhile.
            if !merged.is_empty() {
                return Ok(Some(merged));
            }
        }
    }

    /// Asks every shard whose records ran out for its next `batch` names' records, all at
    /// once.
    async fn read_where_needed(&mut self) -> Result<(), CommandError> {
        let needing: Vec<usize> = (0..self.shards.len())
            .filter(|&at| self.shards[at].needs_reading())
            .collect();
        if needing.is_empty() {
            return Ok(());
        }
        let batch = self.batch;
        let wanted: Vec<Vec<String>> = needing
            .iter()
            .map(|&at| self.shards[at].names.by_ref().take(batch).collect())
            .collect();
        let asked_shards: Vec<&ActorRef<CoordinatorMsg>> =
            needing.iter().map(|&at| &self.shards[at].shard).collect();
        let mut wanted = wanted.into_iter();
        let answers = fanout::ask_each(asked_shards, |reply| CoordinatorMsg::JobsNamed {
            names: wanted.next().unwrap_or_default(),
            reply,
        })
        .answers(CALL_TIMEOUT)
        .await;
        let listing = Asked::to("listing jobs");
        for (at, records) in needing.into_iter().zip(answers) {
            let records = answer(listing, Callee::Shards, Ok::<_, CommandError>(records))?;
            self.shards[at].read.extend(records);
        }
        Ok(())
    }

    /// Hands out records in name order until `batch` are out or a shard with more names has
    /// none read.
    fn merge(&mut self) -> Vec<JobRecord> {
        let mut merged = Vec::with_capacity(self.batch);
        while merged.len() < self.batch && !self.shards.iter().any(ShardCursor::needs_reading) {
            let smallest = (0..self.shards.len())
                .filter_map(|at| Some((at, &self.shards[at].read.front()?.spec.name)))
                .min_by(|(_, a), (_, b)| a.cmp(b))
                .map(|(at, _)| at);
            let Some(at) = smallest else { break };
            merged.extend(self.shards[at].read.pop_front());
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{System, names, triggered};

    async fn read_all(mut stream: JobStream, batch: usize) -> Vec<String> {
        let mut listed = Vec::new();
        while let Some(records) = stream.next_batch().await.unwrap() {
            assert!(!records.is_empty() && records.len() <= batch);
            listed.extend(records.into_iter().map(|job| job.spec.name));
        }
        listed
    }

    #[tokio::test(start_paused = true)]
    async fn every_job_comes_once_in_name_order_across_shards_and_batches() {
        let system = System::start(4).await;
        let mut expected = names("job", 50);
        for name in &expected {
            system.put(triggered(name)).await;
        }
        expected.sort();
        let stream = system.client.job_stream(3).await.unwrap();
        assert_eq!(read_all(stream, 3).await, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_deleted_before_its_batch_is_read_is_left_out() {
        let system = System::start(2).await;
        for name in names("job", 10) {
            system.put(triggered(&name)).await;
        }
        let stream = system.client.job_stream(2).await.unwrap();
        let now_ms = system.clock.now_ms();
        system.client.delete_job("job-7", now_ms).await.unwrap();
        let listed = read_all(stream, 2).await;
        assert_eq!(listed.len(), 9);
        assert!(!listed.contains(&"job-7".to_string()));
        assert!(listed.is_sorted());
    }

    #[tokio::test(start_paused = true)]
    async fn no_jobs_is_an_empty_stream() {
        let system = System::start(3).await;
        let mut stream = system.client.job_stream(10).await.unwrap();
        assert!(stream.next_batch().await.unwrap().is_none());
    }
}
