//! The layout of eddy's keyspace. All keys of one kind share a prefix so that a kind
//! (the catalog) or one operator's state can be scanned or dropped as a range.
//!
//! ```text
//! m/<name>                    metadata: last committed epoch, checkpoint epoch, id counters
//! c/<object id: u32 BE>       catalog entries (JSON)
//! s/<state id: u64 BE>/<key>  state of one relation or operator (as of the checkpoint)
//! l/<epoch: u64 BE>           input log: an epoch's writes since the last checkpoint
//! ```

pub const META_PREFIX: &[u8] = b"m/";
pub const CATALOG_PREFIX: &[u8] = b"c/";
pub const STATE_PREFIX: &[u8] = b"s/";
pub const LOG_PREFIX: &[u8] = b"l/";

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
    let mut k = Vec::with_capacity(11);
    k.extend_from_slice(STATE_PREFIX);
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

/// All state prefixes of one catalog object share this prefix.
pub fn object_state_prefix(object_id: u32) -> Vec<u8> {
    let mut k = STATE_PREFIX.to_vec();
    k.extend_from_slice(&object_id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_prefix_covers_all_its_operator_states() {
        let p = object_state_prefix(7);
        assert!(state_prefix(state_id(7, 0)).starts_with(&p));
        assert!(state_prefix(state_id(7, 99)).starts_with(&p));
        assert!(!state_prefix(state_id(8, 0)).starts_with(&p));
    }
}
