//! What a remote agent (`dron agent`) and the server say to each other: the messages live in
//! the task contract (`dron_task::protocol`), re-exported here under their old path.

pub use dron_task::protocol::*;
