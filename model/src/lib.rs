//! dron's domain model: pure data and maths, no I/O.
//!
//! - [`schedule`]: when a job runs (ISO 8601 repeating intervals and cron, in a time zone).
//! - [`job`]: the Chronos job definition and the state dron keeps beside it.
//! - [`instance`]: runs of a job, their states, and the history of finished and skipped ones.
//! - [`demand`]: what a task asks of an agent (cpus, mem, disk, constraints), and offers matched.
//! - [`container`]: a job's `container` (the image its command runs in, volumes, network).
//! - [`name`]: job-name validation (names reach file paths).
//! - [`resource`]: resources, events and Dron's dependency language (`dependsOn` templates).
//! - [`notice`]: what dron tells people about runs (failure mails, webhooks) and their deliveries.
//! - [`ids`]: instance and task ids derived from (job, target, attempt).
//! - [`ring`]: the consistent-hash ring placing jobs on shards.
//! - [`backfill`]: backfills and reruns, as each shard keeps its part of one.
//! - [`codec`]: how records are encoded for storage.
//! - [`error`]: the client error every validation returns.

pub mod backfill;
pub mod codec;
pub mod container;
pub mod demand;
pub mod error;
pub mod ids;
pub mod instance;
pub mod job;
pub mod name;
pub mod notice;
pub mod resource;
pub mod ring;
pub mod schedule;
