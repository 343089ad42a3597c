//! The streams one connection tracks, keyed by their transport stream id.
//!
//! A `BTreeMap` keeps its root node allocated once it has held an entry, even when emptied, and
//! a leaf has room for 11 entries. Most connections of a relay are idle reservations whose
//! identify and RESERVE streams ended long ago, so the table gives its storage back when its
//! last stream goes (DESIGN §10 memory: 280 bytes per idle connection).

use std::collections::BTreeMap;

use super::stream::StreamEntry;
use super::transport::StreamKey;

/// The streams of one connection. Entries are boxed: a leaf holds room for 11 values, and a
/// busy connection's entries are large.
#[derive(Default)]
pub(crate) struct StreamTable {
    /// `None` whenever no stream is tracked, so an idle connection owns no tree node.
    entries: Option<BTreeMap<StreamKey, Box<StreamEntry>>>,
}

impl StreamTable {
    /// The entry of stream `id`.
    pub(crate) fn get(&self, id: &StreamKey) -> Option<&StreamEntry> {
        self.entries.as_ref()?.get(id).map(|entry| &**entry)
    }

    /// The entry of stream `id`, to change it.
    pub(crate) fn get_mut(&mut self, id: &StreamKey) -> Option<&mut StreamEntry> {
        self.entries.as_mut()?.get_mut(id).map(|entry| &mut **entry)
    }

    /// Tracks stream `id`, replacing (and returning) any entry it had.
    pub(crate) fn insert(
        &mut self,
        id: StreamKey,
        entry: Box<StreamEntry>,
    ) -> Option<Box<StreamEntry>> {
        self.entries.get_or_insert_default().insert(id, entry)
    }

    /// Stops tracking stream `id`; the table frees its storage when this was the last stream.
    pub(crate) fn remove(&mut self, id: &StreamKey) -> Option<Box<StreamEntry>> {
        let entries = self.entries.as_mut()?;
        let entry = entries.remove(id);
        if entries.is_empty() {
            // An emptied map would keep its root leaf; dropping it frees the leaf.
            self.entries = None;
        }
        entry
    }

    /// How many streams are tracked.
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, BTreeMap::len)
    }

    /// The tracked streams and their entries, in stream-id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&StreamKey, &StreamEntry)> {
        self.entries
            .iter()
            .flat_map(BTreeMap::iter)
            .map(|(id, entry)| (id, &**entry))
    }

    /// The tracked entries, in stream-id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &StreamEntry> {
        self.entries
            .iter()
            .flat_map(BTreeMap::values)
            .map(|entry| &**entry)
    }

    /// Empties the table, handing over every entry in stream-id order.
    pub(crate) fn take_all(&mut self) -> BTreeMap<StreamKey, Box<StreamEntry>> {
        self.entries.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::stream::StreamKind;

    fn entry() -> Box<StreamEntry> {
        Box::new(StreamEntry::new(StreamKind::Closing))
    }

    fn key(n: u64) -> StreamKey {
        StreamKey::Quic(quinn_proto::StreamId::new(
            quinn_proto::Side::Client,
            quinn_proto::Dir::Bi,
            n,
        ))
    }

    #[test]
    fn removing_the_last_stream_drops_the_tree_and_its_leaf() {
        let mut table = StreamTable::default();
        table.insert(key(0), entry());
        table.insert(key(1), entry());
        assert!(table.remove(&key(0)).is_some());
        assert_eq!(table.len(), 1);
        assert!(table.entries.is_some(), "a stream is still tracked");
        assert!(table.remove(&key(1)).is_some());
        assert_eq!(table.len(), 0);
        assert!(
            table.entries.is_none(),
            "an emptied tree would keep its leaf"
        );
        assert!(table.remove(&key(1)).is_none());
        assert!(table.get(&key(1)).is_none());
    }

    #[test]
    fn the_table_tracks_streams_like_a_map_in_stream_id_order() {
        let mut table = StreamTable::default();
        for n in [3, 1, 2] {
            assert!(table.insert(key(n), entry()).is_none());
        }
        assert!(table.insert(key(2), entry()).is_some(), "replaced");
        assert_eq!(table.len(), 3);
        table.get_mut(&key(1)).expect("tracked").send_closed = true;
        assert!(table.get(&key(1)).expect("tracked").send_closed);
        let closed: Vec<bool> = table.values().map(|e| e.send_closed).collect();
        assert_eq!(closed, [true, false, false]);
        let taken = table.take_all();
        assert_eq!(
            taken.keys().copied().collect::<Vec<_>>(),
            [key(1), key(2), key(3)]
        );
        assert_eq!(table.len(), 0);
        assert!(table.entries.is_none());
    }
}
