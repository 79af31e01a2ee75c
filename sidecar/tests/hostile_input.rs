//! Hostile input, drawn at random (proptest): what a stranger can send to the peer port,
//! what a broken or tampered config file holds, and what a state file can contain after
//! a bad disk or a hostile local user. Every one is answered with an error, never a
//! panic; and input that is valid but altered is refused, never taken.

mod example_config;

use example_config::{env, with_env_secrets};
use multiaz_engine::{DurableState, Engine, HardState, NodeId, PeerMessage, StoredEntry, Time};
use multiaz_sidecar::adapters::auth::{Challenge, ClusterKey, Opener, Sealer, NONCE};
use multiaz_sidecar::adapters::state_file::StateFile;
use multiaz_sidecar::config::{AdminAccess, Config};
use proptest::prelude::*;
use std::path::Path;

const CHALLENGE: Challenge = Challenge([9; NONCE]);

fn key() -> ClusterKey {
    ClusterKey::new(b"hostile-input-test-key-0123456789".to_vec()).unwrap()
}

/// Every way the listener reads a frame, fed `bytes`.
fn open_every_way(bytes: &[u8]) -> usize {
    let k = key();
    let mut taken = 0;
    taken += usize::from(
        Opener::new(k.clone(), CHALLENGE, NodeId(1))
            .open(bytes)
            .is_ok(),
    );
    taken += usize::from(matches!(k.answer(&CHALLENGE, bytes), Some(Ok(_))));
    taken += usize::from(matches!(k.open_call(&CHALLENGE, bytes), Some(Ok(_))));
    taken += usize::from(k.open_reply(&CHALLENGE, &[1; NONCE], bytes).is_ok());
    taken += usize::from(Challenge::from_frame(bytes).is_ok());
    taken
}

/// A state file with a valid header and checksum around `body`.
fn state_file_bytes(body: &[u8]) -> Vec<u8> {
    let mut f = b"MULTIAZ1".to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn load(bytes: &[u8]) -> Result<Option<DurableState>, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft-state"), bytes).unwrap();
    StateFile::new(dir.path()).load().map_err(|e| e.to_string())
}

fn spec() -> multiaz_engine::ClusterSpec {
    multiaz_engine::ClusterSpec::from_toml(include_str!("../../engine/examples/cluster.toml"))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_on_the_peer_port_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // A random frame is never taken as sealed, a ping, a call or a reply (the
        // challenge parser may take 24 random bytes that start with its tag: none do).
        prop_assert_eq!(open_every_way(&bytes), 0);
    }

    #[test]
    fn a_valid_frame_with_any_byte_changed_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut sealer = Sealer::new(key(), NodeId(2), NodeId(1), CHALLENGE);
        let mut frame = sealer.seal(PeerMessage::LeaseGrant { epoch: 4, seq: 9 });
        let i = at.index(frame.len());
        frame[i] ^= flip;
        prop_assert!(Opener::new(key(), CHALLENGE, NodeId(1)).open(&frame).is_err());
        let mut call = key().call(&CHALLENGE, &[3; NONCE], b"{\"epoch\":4}");
        let j = at.index(call.len());
        call[j] ^= flip;
        prop_assert!(!matches!(key().open_call(&CHALLENGE, &call), Some(Ok(_))));
    }

    #[test]
    fn random_text_as_a_config_is_an_error(text in "\\PC{0,400}") {
        let path = Path::new("/etc/multiaz/multiaz.toml");
        let _ = Config::parse(path, &text, &env);
        let _ = AdminAccess::parse(path, &text, &env);
    }

    #[test]
    fn the_example_with_a_line_cut_or_changed_parses_or_names_an_error(
        line in any::<prop::sample::Index>(),
        how in 0u8..4,
        value in "[-0-9a-z\"\\[\\]=., ]{0,24}",
    ) {
        let text = with_env_secrets();
        let lines: Vec<&str> = text.lines().collect();
        let at = line.index(lines.len());
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match how {
            0 => { edited.remove(at); }
            1 => edited.insert(at, edited[at].clone()),
            2 => {
                if let Some((k, _)) = edited[at].split_once('=') {
                    edited[at] = format!("{k}= {value}");
                }
            }
            _ => edited[at] = value.clone(),
        }
        let path = Path::new("/etc/multiaz/multiaz.toml");
        match Config::parse(path, &edited.join("\n"), &env) {
            Ok(_) => {}
            // An error names the file, and never shows a secret.
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("/etc/multiaz/multiaz.toml"), "{}", e);
                prop_assert!(!e.contains("s3cret-password") && !e.contains("0123456789abcdef0123"), "{}", e);
            }
        }
        let _ = AdminAccess::parse(path, &edited.join("\n"), &env);
    }

    #[test]
    fn random_bytes_as_a_state_file_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(load(&bytes).is_err());
        // Behind a valid header and checksum too.
        prop_assert!(load(&state_file_bytes(&bytes)).is_err());
    }

    #[test]
    fn random_bytes_as_the_state_log_load_or_are_refused_never_a_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        own_header in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        file.write(&DurableState::default()).unwrap();
        let log = dir.path().join("raft-log");
        // Behind the log's own header (generation 1, the base's) or as the whole file.
        let mut bytes = match own_header {
            true => std::fs::read(&log).unwrap(),
            false => Vec::new(),
        };
        bytes.extend_from_slice(&tail);
        std::fs::write(&log, &bytes).unwrap();
        if let Ok(Some(state)) = file.load() {
            prop_assert!(state.check().is_ok());
        }
    }

    #[test]
    fn any_state_that_loads_starts_an_engine_or_is_refused_never_a_panic(
        term in prop_oneof![0u64..10, any::<u64>()],
        vote in 0u64..5,
        commit in prop_oneof![0u64..5, any::<u64>()],
        boots in prop_oneof![0u64..3, any::<u64>()],
        entries in proptest::collection::vec(
            (0u64..6, 0u64..10, proptest::collection::vec(any::<u8>(), 0..48)),
            0..5,
        ),
    ) {
        let state = DurableState {
            hard_state: HardState { term, vote, commit },
            snapshot: None,
            entries: entries
                .into_iter()
                .map(|(index, term, bytes)| StoredEntry { index, term, bytes })
                .collect(),
            boots,
        };
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        file.write(&state).unwrap();
        if let Ok(Some(loaded)) = file.load() {
            prop_assert_eq!(&loaded, &state);
            // What passed the file's checks, raft's own checks take or refuse.
            let _ = Engine::new(spec(), NodeId(1), Some(&loaded), Time::ZERO);
        }
    }
}
