//! Recovery from storage and moving jobs between shards.

use super::*;

#[test]
fn recovery_adopts_running_tasks_and_keeps_timers() {
    let mut shard = empty_shard();
    let mut out = Outbox::default();
    shard.put_job(every_second("a"), T0, &mut out);
    let fired = tick(&mut shard, T0);
    let store = MemoryStore::default();
    drop(store.submit(out.ops));
    drop(store.submit(fired.ops));
    let (recovered, out) =
        Shard::recover(0, ShardConfig::default(), store.load().unwrap(), T0 + 500);
    assert_eq!(
        out.adopts.len(),
        1,
        "the running task is adopted, not relaunched"
    );
    assert!(out.launches.is_empty());
    assert_eq!(recovered.next_deadline(), Some(T0 + 1000));
}

#[test]
fn release_and_adopt_move_a_job_with_its_live_instances() {
    let mut source = empty_shard();
    for i in 0..50 {
        source.put_job(
            every_second(&format!("job-{i}")),
            T0,
            &mut Outbox::default(),
        );
    }
    tick(&mut source, T0);
    let ring = Ring::new(2);
    let moved = source.release(&ring);
    assert!(!moved.is_empty() && moved.len() < 50);
    assert!(
        moved
            .iter()
            .all(|m| ring.owner(&m.record.spec.name) == 1 && m.live.len() == 1)
    );
    let mut destination = Shard::recover(1, ShardConfig::default(), ShardSnapshot::default(), T0).0;
    let mut out = Outbox::default();
    destination.adopt(moved.clone(), T0 + 100, &mut out);
    assert!(
        out.launches.is_empty(),
        "running instances keep running where they are"
    );
    assert_eq!(destination.stats(0).jobs, moved.len());
    assert_eq!(source.stats(0).jobs + destination.stats(0).jobs, 50);
    // Adopting the same jobs again (an interrupted move redone) changes nothing.
    let mut again = Outbox::default();
    destination.adopt(moved, T0 + 200, &mut again);
    assert!(again.ops.is_empty());
}

#[test]
fn waiting_instances_are_rebuilt_from_storage() {
    let store = MemoryStore::default();
    let resources = no_resources();
    let (mut shard, _) = Shard::recover(0, ShardConfig::default(), ShardSnapshot::default(), T0);
    let mut out = Outbox::default();
    shard.put_job(hourly_waiting_for(&["a/{HOUR}", "b/{HOUR}"]), T0, &mut out);
    shard.tick(T0, &mut out);
    drop(store.submit(out.ops));
    // One resource landed while the shard was down.
    satisfy(&resources, "a/2026-11-23T10");
    let (mut shard, mut recovered) =
        Shard::recover(0, ShardConfig::default(), store.load().unwrap(), T0 + 1000);
    look_up(&mut shard, &resources, T0 + 1000, &mut recovered);
    let view = shard.job_view("load").unwrap();
    assert_eq!(view.waiting_for[0].1, ["b/2026-11-23T10"]);
    let event = satisfy(&resources, "b/2026-11-23T10");
    let mut out = Outbox::default();
    shard.resource_ready(&event, T0 + 2000, &mut out);
    assert_eq!(out.launches.len(), 1);
    assert_eq!(shard.lineage("b/2026-11-23T10").consumers, ["load"]);
}

#[test]
fn notices_left_in_the_outbox_are_handed_over_again_after_a_restart() {
    let store = MemoryStore::default();
    let notice = Notice {
        job: "a".into(),
        kind: NoticeKind::Failed,
        target_ms: T0,
        at_ms: T0,
        owner: String::new(),
        webhooks: vec![],
        attempt: 0,
        task_id: None,
        exit_code: Some(1),
        message: String::new(),
        count: 1,
        stderr_tail: String::new(),
    };
    drop(store.submit(vec![StoreOp::PutNotice(notice.clone())]));
    let (_, out) = Shard::recover(0, ShardConfig::default(), store.load().unwrap(), T0);
    assert_eq!(out.notices, [notice]);
}
