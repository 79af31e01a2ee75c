//! Unit-level rules: the record, storage, robustness. (The candidate's choice and
//! detection are tested in their modules, `choose.rs` and `detect.rs`.)

use multiaz_engine::*;
use multiaz_testkit::harness::spec;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn begin(epoch: u64, suspects: &[NodeId]) -> LogEntry {
    LogEntry::FailoverBegin {
        epoch,
        suspects: suspects.to_vec(),
        reason: "test".into(),
        wall_ms: 0,
        planned: None,
    }
}

fn complete(epoch: u64, new_master: NodeId) -> LogEntry {
    LogEntry::FailoverComplete {
        epoch,
        new_master,
        report: FailoverReport::default(),
        wall_ms: 1,
    }
}

#[test]
fn record_accepts_one_candidate_per_epoch() {
    let mut r = ClusterRecord::initial(&spec());
    r.apply(&begin(2, &[N1])).unwrap();
    assert_eq!(r.writer(), None, "no writer until a candidate is chosen");
    r.apply(&LogEntry::CandidateChosen {
        epoch: 2,
        candidate: N2,
    })
    .unwrap();
    assert!(r
        .apply(&LogEntry::CandidateChosen {
            epoch: 2,
            candidate: N3
        })
        .is_err());
    assert_eq!(r.writer(), Some(N2));
    assert!(
        r.apply(&complete(2, N3)).is_err(),
        "completion must name the committed candidate"
    );
    r.apply(&complete(2, N2)).unwrap();
    assert_eq!(
        (r.epoch, r.master, r.failover.is_none()),
        (2, Some(N2), true)
    );
    assert!(matches!(r.journal[0].outcome, Outcome::Completed(_)));
}

#[test]
fn record_ignores_stale_and_duplicate_entries() {
    let mut r = ClusterRecord::initial(&spec());
    assert!(r.apply(&begin(3, &[N1])).is_err(), "epochs do not skip");
    r.apply(&begin(2, &[N1])).unwrap();
    assert!(
        r.apply(&begin(2, &[N1])).is_err(),
        "a re-proposed begin changes nothing"
    );
    assert!(r.apply(&complete(1, N2)).is_err());
    assert!(r
        .apply(&LogEntry::CandidateChosen {
            epoch: 1,
            candidate: N2
        })
        .is_err());
    assert_eq!(r.epoch, 2);
}

#[test]
fn a_superseded_failover_is_journaled_and_its_candidate_is_suspect() {
    let mut r = ClusterRecord::initial(&spec());
    r.apply(&begin(2, &[N1])).unwrap();
    r.apply(&LogEntry::CandidateChosen {
        epoch: 2,
        candidate: N2,
    })
    .unwrap();
    r.apply(&begin(3, &[N1, N2])).unwrap();
    assert_eq!(r.writer(), None);
    assert!(matches!(
        r.journal[0].outcome,
        Outcome::Superseded { by_epoch: 3 }
    ));
    assert_eq!(r.failover.as_ref().unwrap().suspects, vec![N1, N2]);
}

fn switchover(epoch: u64, from: NodeId, to: NodeId) -> LogEntry {
    LogEntry::FailoverBegin {
        epoch,
        suspects: vec![from],
        reason: "planned".into(),
        wall_ms: 0,
        planned: Some(to),
    }
}

#[test]
fn a_switchover_fits_only_a_settled_record_and_can_be_cancelled_only_before_its_target() {
    let mut r = ClusterRecord::initial(&spec());
    // Not from a node that is not the master, not to the master itself.
    assert!(r.apply(&switchover(2, N2, N3)).is_err());
    assert!(r.apply(&switchover(2, N1, N1)).is_err());
    r.apply(&switchover(2, N1, N2)).unwrap();
    assert_eq!(r.writer(), None, "nobody writes while it runs");
    // Cancelled before the target is committed: the master stays, no quarantine.
    let cancel = LogEntry::SwitchoverCancelled {
        epoch: 2,
        why: "target behind".into(),
        wall_ms: 5,
    };
    r.apply(&cancel).unwrap();
    assert_eq!((r.master, r.writer(), r.epoch), (Some(N1), Some(N1), 2));
    assert!(r.journal[0].planned);
    assert!(matches!(&r.journal[0].outcome, Outcome::Cancelled { why } if why == "target behind"));
    // Once its target is committed it can no longer be cancelled; it completes, and
    // the demoted master is not quarantined.
    r.apply(&switchover(3, N1, N2)).unwrap();
    assert!(r.apply(&switchover(4, N1, N3)).is_err(), "one at a time");
    r.apply(&LogEntry::CandidateChosen {
        epoch: 3,
        candidate: N2,
    })
    .unwrap();
    let cancel = LogEntry::SwitchoverCancelled {
        epoch: 3,
        why: "late".into(),
        wall_ms: 6,
    };
    assert!(r.apply(&cancel).is_err());
    r.apply(&complete(3, N2)).unwrap();
    assert_eq!(r.master, Some(N2));
    assert!(r.quarantined.is_empty());
    // An automatic failover cannot be "cancelled".
    r.apply(&begin(4, &[N2])).unwrap();
    assert!(r
        .apply(&LogEntry::SwitchoverCancelled {
            epoch: 4,
            why: "x".into(),
            wall_ms: 7
        })
        .is_err());
}

#[test]
fn automatic_failovers_block_the_next_one_until_the_period_ends_or_an_ack() {
    let mut r = ClusterRecord::initial(&spec());
    assert_eq!(r.failover_blocked_until(1000, 0), None);
    r.apply(&switchover(2, N1, N2)).unwrap();
    r.apply(&LogEntry::CandidateChosen {
        epoch: 2,
        candidate: N2,
    })
    .unwrap();
    r.apply(&complete(2, N2)).unwrap();
    assert_eq!(
        r.failover_blocked_until(1000, 1),
        None,
        "a switchover blocks nothing"
    );
    r.apply(&begin(3, &[N2])).unwrap();
    r.apply(&LogEntry::CandidateChosen {
        epoch: 3,
        candidate: N3,
    })
    .unwrap();
    r.apply(&complete(3, N3)).unwrap();
    let ended = r.journal.last().unwrap().ended_wall_ms;
    assert_eq!(r.failover_blocked_until(1000, ended), Some(ended + 1000));
    assert_eq!(r.failover_blocked_until(1000, ended + 1000), None);
    assert_eq!(r.failover_blocked_until(0, ended), None, "0 turns it off");
    r.apply(&LogEntry::Ack { epoch: 3 }).unwrap();
    assert_eq!(r.failover_blocked_until(1000, ended), None);
}

#[test]
fn the_journal_is_bounded() {
    let mut r = ClusterRecord::initial(&spec());
    for e in 2..200u64 {
        r.apply(&begin(e, &[N1])).unwrap();
        r.apply(&LogEntry::CandidateChosen {
            epoch: e,
            candidate: N2,
        })
        .unwrap();
        r.apply(&LogEntry::FailoverComplete {
            epoch: e,
            new_master: N2,
            report: Default::default(),
            wall_ms: 0,
        })
        .unwrap();
    }
    assert_eq!(r.journal.len(), multiaz_engine::record::JOURNAL_LEN);
    assert_eq!(r.journal.last().unwrap().epoch, 199);
}

#[test]
fn log_entries_round_trip_and_garbage_is_an_error() {
    let e = begin(2, &[N1]);
    assert_eq!(LogEntry::decode(&e.encode()).unwrap(), e);
    assert!(LogEntry::decode(b"\xff\x00garbage").is_err());
}

#[test]
fn durable_state_truncates_an_overwritten_suffix_and_checks_gaps() {
    let entry = |index: u64, term: u64| StoredEntry {
        index,
        term,
        bytes: vec![],
    };
    let mut d = DurableState::default();
    d.apply(PersistBatch {
        hard_state: None,
        snapshot: None,
        entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
        then_send: vec![],
    });
    let sent = d.apply(PersistBatch {
        snapshot: None,
        hard_state: Some(HardState {
            term: 2,
            vote: 2,
            commit: 2,
        }),
        entries: vec![entry(3, 2)],
        then_send: vec![(N2, PeerMessage::LeaseGrant { epoch: 1, seq: 1 })],
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(
        d.entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 1), (3, 2)]
    );
    assert!(d.check().is_ok());
    d.entries.remove(1);
    assert!(d.check().unwrap_err().contains("index 3"));
}

#[test]
fn a_corrupt_durable_state_refuses_to_start() {
    let mut d = DurableState::default();
    d.entries.push(StoredEntry {
        index: 1,
        term: 1,
        bytes: vec![0xff, 0xff, 0xff],
    });
    d.hard_state = HardState {
        term: 1,
        vote: 1,
        commit: 1,
    };
    let e = Engine::new(spec(), N1, Some(&d), Time::ZERO).err().unwrap();
    assert!(e.to_string().contains("stored raft entry 1"), "{e}");
    d.hard_state.commit = 5;
    assert!(Engine::new(spec(), N1, Some(&d), Time::ZERO).is_err());
}

#[test]
fn an_unknown_node_cannot_start() {
    assert_eq!(
        Engine::new(spec(), NodeId(9), None, Time::ZERO).err(),
        Some(EngineError::UnknownNode(NodeId(9)))
    );
}

#[test]
fn malformed_or_misaddressed_input_is_named_not_panicked_on() {
    let mut e = Engine::new(spec(), N1, None, Time::ZERO).unwrap();
    // Each is named by its own event (logged as a warning or, for the harmless ones,
    // at debug level), never a panic.
    let emitted = |cmds: Vec<Command>, what: fn(&Event) -> bool| {
        cmds.iter()
            .any(|c| matches!(c, Command::Emit(e) if what(e)))
    };
    e.handle(
        Time::from_millis(1),
        Input::Peer {
            from: N2,
            message: PeerMessage::Raft(vec![0xde, 0xad, 0xbe, 0xef]),
        },
    );
    assert!(emitted(e.take_commands(), |e| matches!(
        e,
        Event::RaftRejected { from: N2, .. }
    )));
    e.handle(
        Time::from_millis(2),
        Input::Peer {
            from: NodeId(42),
            message: PeerMessage::LeaseGrant { epoch: 1, seq: 1 },
        },
    );
    assert!(emitted(e.take_commands(), |e| matches!(
        e,
        Event::NotAPeer { from: NodeId(42) }
    )));
    e.handle(
        Time::from_millis(3),
        Input::Done {
            id: CommandId(999),
            result: CommandResult::Done(Ok(())),
        },
    );
    assert!(emitted(e.take_commands(), |e| matches!(
        e,
        Event::UnknownResult { id: CommandId(999) }
    )));
    // A raft message whose header claims another sender.
    let mut other = Engine::new(spec(), N2, None, Time::ZERO).unwrap();
    let mut raft_bytes = None;
    for t in (0..5000).step_by(100) {
        other.handle(Time::from_millis(t), Input::Tick { wall_unix_ms: 0 });
        for c in other.take_commands() {
            match c {
                Command::Send {
                    message: PeerMessage::Raft(b),
                    ..
                } => {
                    raft_bytes.get_or_insert(b);
                }
                Command::Persist(p) => {
                    for (_, m) in p.then_send {
                        if let PeerMessage::Raft(b) = m {
                            raft_bytes.get_or_insert(b);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let bytes = raft_bytes.expect("n2 campaigns");
    e.handle(
        Time::from_millis(5000),
        Input::Peer {
            from: N3,
            message: PeerMessage::Raft(bytes),
        },
    );
    assert!(emitted(e.take_commands(), |e| matches!(
        e,
        Event::RaftRejected { from: N3, .. }
    )));
}

#[test]
fn time_going_backwards_is_treated_as_now() {
    let mut e = Engine::new(spec(), N1, None, Time::ZERO).unwrap();
    e.handle(Time::from_millis(5000), Input::Tick { wall_unix_ms: 0 });
    let d = e.next_deadline();
    e.handle(Time::from_millis(10), Input::Tick { wall_unix_ms: 0 });
    assert!(e.next_deadline() >= d);
}

#[test]
fn the_next_deadline_is_never_in_the_past() {
    let mut e = Engine::new(spec(), N2, None, Time::ZERO).unwrap();
    let mut now = Time::ZERO;
    for _ in 0..50 {
        e.handle(now, Input::Tick { wall_unix_ms: 0 });
        let d = e.next_deadline();
        assert!(d >= now);
        now = d + std::time::Duration::from_millis(1);
    }
}

#[test]
fn role_names_are_the_serialized_names() {
    for role in multiaz_engine::Role::ALL {
        assert_eq!(
            serde_json::to_value(role).unwrap(),
            serde_json::Value::String(role.name().to_string())
        );
    }
}

#[test]
fn a_grant_for_a_lease_round_of_an_earlier_start_never_counts() {
    // N1, the master of record, has started once before with this state.
    let restored = DurableState {
        boots: 1,
        ..DurableState::default()
    };
    let mut e = Engine::new(spec(), N1, Some(&restored), Time::ZERO).unwrap();
    let mut rounds = Vec::new();
    let mut now = Time::ZERO;
    for t in (0..3000).step_by(50) {
        now = Time::from_millis(t);
        e.handle(now, Input::Tick { wall_unix_ms: 0 });
        for c in e.take_commands() {
            if let Command::Send {
                message: PeerMessage::LeaseRequest { epoch, seq },
                ..
            } = c
            {
                rounds.push((epoch, seq));
            }
        }
    }
    let (epoch, first) = rounds[0];
    assert!(
        first > restored.lease_round_base(),
        "this start's rounds are numbered past every round of the earlier one: {first}"
    );
    // Grants (replayed, or sent late by peers) for the rounds an earlier start with
    // the same numbering as before would have used: none counts.
    for seq in 1..=rounds.len() as u64 + 10 {
        for from in [N2, N3] {
            e.handle(
                now,
                Input::Peer {
                    from,
                    message: PeerMessage::LeaseGrant { epoch, seq },
                },
            );
        }
    }
    e.take_commands();
    assert!(!e.status().lease_valid, "an earlier start's grant counted");
    // The live round's grant does: the check above can fail.
    let (_, live) = *rounds.last().unwrap();
    e.handle(
        now,
        Input::Peer {
            from: N2,
            message: PeerMessage::LeaseGrant { epoch, seq: live },
        },
    );
    assert!(e.status().lease_valid, "the live round's grant must count");
}
