//! The layout of eddy's keyspace. All keys of one kind share a prefix so that a kind
//! (the catalog) or one operator's state can be scanned or dropped as a range.
//!
//! ```text
//! m/<name>                    metadata: last committed epoch, checkpoint epoch, id counters
//! c/<object id: u32 BE>       catalog entries (JSON)
//! s/<state id: u64 BE>/<key>  state of one relation or operator written key by key
//! r/<state id: u64 BE>/<seq: u64 BE>  checkpointed operator state as sorted runs
//! l/<epoch: u64 BE>           input log: an epoch's writes since the last checkpoint
//! h/<object id: u32 BE>/s     subscription history of a relation: complete since (u64 BE)
//! h/<object id: u32 BE>/e<epoch: u64 BE>  that relation's changes in one epoch
//! ```

pub const META_PREFIX: &[u8] = b"m/";
pub const CATALOG_PREFIX: &[u8] = b"c/";
pub const STATE_PREFIX: &[u8] = b"s/";
/// Operator state written at checkpoints, as sorted runs (`storage::runs`).
pub const RUN_PREFIX: &[u8] = b"r/";
pub const LOG_PREFIX: &[u8] = b"l/";
pub const HISTORY_PREFIX: &[u8] = b"h/";
/// Sources keep their progress (offsets) under `m/source/<object id>`.
pub const SOURCE_PROGRESS_PREFIX: &[u8] = b"m/source/";

pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = META_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn catalog_key(object_id: u32) -> Vec<u8> {
    let mut k = CATALOG_PREFIX.to_vec();
    k.extend_from_slice(&object_id.to_be_bytes());
    k
}

/// The prefix under which the state with id `state_id` lives.
pub fn state_prefix(state_id: u64) -> Vec<u8> {
    id_prefix(STATE_PREFIX, state_id)
}

/// `prefix`, then a state id and a slash.
fn id_prefix(prefix: &[u8], state_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&state_id.to_be_bytes());
    k.push(b'/');
    k
}

/// The key of `key` within state `state_id`.
pub fn state_key(state_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = state_prefix(state_id);
    k.extend_from_slice(key);
    k
}

/// State ids are derived from the owning catalog object and the operator's index within
/// it, so a replanned view finds its operators' state again after a restart.
pub fn state_id(object_id: u32, index: u32) -> u64 {
    ((object_id as u64) << 32) | index as u64
}

/// The subscription history of one relation (`AS OF` resumes across restarts).
pub fn history_prefix(object_id: u32) -> Vec<u8> {
    let mut k = HISTORY_PREFIX.to_vec();
    k.extend_from_slice(&object_id.to_be_bytes());
    k.push(b'/');
    k
}

/// Where a relation's history records the epoch it is complete since.
pub fn history_since_key(object_id: u32) -> Vec<u8> {
    let mut k = history_prefix(object_id);
    k.push(b's');
    k
}

/// One epoch's changes of a relation, in its history.
pub fn history_entry_key(object_id: u32, epoch: u64) -> Vec<u8> {
    let mut k = history_prefix(object_id);
    k.push(b'e');
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// Split a history key into (object id, `None` for the since key or `Some(epoch)`).
pub fn parse_history_key(key: &[u8]) -> Option<(u32, Option<u64>)> {
    let rest = key.strip_prefix(HISTORY_PREFIX)?;
    let object_id = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    match rest.get(4..)? {
        b"/s" => Some((object_id, None)),
        [b'/', b'e', epoch @ ..] => {
            Some((object_id, Some(u64::from_be_bytes(epoch.try_into().ok()?))))
        }
        _ => None,
    }
}

/// All state prefixes of one catalog object share this prefix.
pub fn object_state_prefix(object_id: u32) -> Vec<u8> {
    [STATE_PREFIX, &object_id.to_be_bytes()].concat()
}

/// All state runs of one catalog object share this prefix.
pub fn object_run_prefix(object_id: u32) -> Vec<u8> {
    [RUN_PREFIX, &object_id.to_be_bytes()].concat()
}

/// The prefix of the runs of the state with id `state_id`.
pub fn run_prefix(state_id: u64) -> Vec<u8> {
    id_prefix(RUN_PREFIX, state_id)
}

/// The key of run `seq` (the epoch of the checkpoint that wrote it) of `state_id`.
pub fn run_key(state_id: u64, seq: u64) -> Vec<u8> {
    let mut k = run_prefix(state_id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_round_trip_and_sort_by_epoch() {
        assert_eq!(parse_history_key(&history_since_key(3)), Some((3, None)));
        assert_eq!(
            parse_history_key(&history_entry_key(3, 1_700_000_000_123)),
            Some((3, Some(1_700_000_000_123)))
        );
        assert!(history_entry_key(3, 255) < history_entry_key(3, 256));
        assert!(history_since_key(3).starts_with(&history_prefix(3)));
        assert!(!history_entry_key(4, 1).starts_with(&history_prefix(3)));
        assert_eq!(parse_history_key(b"h/xx"), None);
    }

    #[test]
    fn object_prefix_covers_all_its_operator_states() {
        let p = object_state_prefix(7);
        assert!(state_prefix(state_id(7, 0)).starts_with(&p));
        assert!(state_prefix(state_id(7, 99)).starts_with(&p));
        assert!(!state_prefix(state_id(8, 0)).starts_with(&p));
        let r = object_run_prefix(7);
        assert!(run_key(state_id(7, 3), 42).starts_with(&r));
        assert!(!run_key(state_id(8, 0), 1).starts_with(&r));
        assert!(run_key(state_id(7, 3), 255) < run_key(state_id(7, 3), 256));
    }
}
