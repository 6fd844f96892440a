//! The agent's reservation desk: the reservations this host holds, kept in the agent's store so
//! they survive restarts and coordinator outages, and admitted by the host's own rule
//! ([`presage_decide::reservation::ReservationBook`]): a request that would overcommit this
//! host is refused here, whatever the coordinator believes.
//!
//! Every change is written to the store before it is acknowledged. An entry that cannot be read
//! back is reported by key and left in place (never dropped silently).

use std::sync::Arc;

use presage_decide::reservation::{Refusal, Reservation, ReservationBook, ReservationKind, Resources};

use crate::store::{KvStore, KvTree, Order, StoreError};

/// The store tree that holds reservations, keyed by reservation id.
pub const TREE: &str = "reservations";

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reservation store entry {key:?} is unreadable ({detail}); it was left in place")]
    Corrupt { key: String, detail: String },
}

/// The host's reservations, durable.
pub struct ReservationDesk {
    store: Arc<dyn KvStore>,
    tree: Arc<dyn KvTree>,
    book: ReservationBook,
    capacity: Resources,
    cpu_limit: f64,
}

impl ReservationDesk {
    /// Loads the reservations kept in `store`. `cpu_limit` is the share of CPU capacity that
    /// committed use plus hard reservations may reach.
    pub fn open(store: Arc<dyn KvStore>, capacity: Resources, cpu_limit: f64) -> Result<ReservationDesk, ReservationError> {
        let tree = store.tree(TREE)?;
        let mut entries = Vec::new();
        for (k, v) in tree.scan_prefix(b"", Order::Ascending, usize::MAX)? {
            let r: Reservation = serde_json::from_slice(&v)
                .map_err(|e| ReservationError::Corrupt { key: String::from_utf8_lossy(&k).into_owned(), detail: e.to_string() })?;
            entries.push(r);
        }
        Ok(ReservationDesk { store, tree, book: ReservationBook::from_entries(entries), capacity, cpu_limit })
    }

    pub fn book(&self) -> &ReservationBook {
        &self.book
    }

    /// Admits `r` given what the host's VMs use now, and persists it; refused requests change
    /// nothing.
    pub fn reserve(&mut self, r: Reservation, now_ms: u64, committed: Resources) -> Result<(), ReservationError> {
        let _span = tracing::info_span!("reserve", id = %r.id, vm = %r.vm_id, kind = ?r.kind, cpu_mhz = r.cpu_mhz).entered();
        self.book.check(&r, now_ms, self.capacity, committed, self.cpu_limit)?;
        let value = serde_json::to_vec(&r).expect("a reservation serialises");
        self.tree.insert(r.id.as_bytes(), &value)?;
        self.store.flush()?;
        self.book.admit(r, now_ms, self.capacity, committed, self.cpu_limit)?;
        Ok(())
    }

    /// Releases reservation `id` (the move was abandoned) or turns it into an allocation (the VM
    /// arrived): either way it holds nothing more. Returns it, if it existed.
    pub fn release(&mut self, id: &str) -> Result<Option<Reservation>, ReservationError> {
        self.tree.remove(id.as_bytes())?;
        self.store.flush()?;
        Ok(self.book.remove(id))
    }

    /// Drops expired reservations from the book and the store.
    pub fn purge_expired(&mut self, now_ms: u64) -> Result<Vec<Reservation>, ReservationError> {
        let gone = self.book.purge_expired(now_ms);
        for r in &gone {
            self.tree.remove(r.id.as_bytes())?;
        }
        Ok(gone)
    }

    pub fn held(&self, kind: ReservationKind, now_ms: u64) -> Resources {
        self.book.held(kind, now_ms)
    }

    pub fn capacity(&self) -> Resources {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    const CAP: Resources = Resources { cpu_mhz: 8_000.0, memory_mib: 16_384.0 };

    fn hard(id: &str, cpu: f64, mem: f64) -> Reservation {
        Reservation::hard(id, &format!("vm-{id}"), cpu, mem, 1_000_000)
    }

    #[test]
    fn the_agent_refuses_an_overcommitting_reservation_on_its_own_and_keeps_what_it_admitted_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let used = Resources { cpu_mhz: 2_000.0, memory_mib: 4_096.0 };
        {
            let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
            let mut desk = ReservationDesk::open(store.clone(), CAP, 1.0).unwrap();
            desk.reserve(hard("plan1/vm-a", 4_000.0, 8_192.0), 10, used).unwrap();
            // No coordinator is involved: the desk itself refuses the second one.
            let e = desk.reserve(hard("plan2/vm-b", 3_000.0, 1_024.0), 10, used).unwrap_err();
            assert!(e.to_string().contains("CPU would be overcommitted"), "{e}");
            desk.reserve(hard("plan3/vm-c", 1_000.0, 1_024.0), 10, used).unwrap();
            store.flush().unwrap();
        }
        // A restarted agent holds the same reservations and still refuses the same request.
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let mut desk = ReservationDesk::open(store.clone(), CAP, 1.0).unwrap();
        let mut ids: Vec<&str> = desk.book().entries().iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["plan1/vm-a", "plan3/vm-c"]);
        assert!(desk.reserve(hard("plan2/vm-b", 3_000.0, 1_024.0), 20, used).is_err());
        // Releasing one frees its capacity, durably.
        assert_eq!(desk.release("plan1/vm-a").unwrap().map(|r| r.cpu_mhz), Some(4_000.0));
        desk.reserve(hard("plan2/vm-b", 3_000.0, 1_024.0), 20, used).unwrap();
        drop(desk);
        let desk = ReservationDesk::open(store, CAP, 1.0).unwrap();
        assert_eq!(desk.held(ReservationKind::Hard, 20), Resources { cpu_mhz: 4_000.0, memory_mib: 2_048.0 });
    }

    #[test]
    fn expired_reservations_are_purged_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let mut desk = ReservationDesk::open(store.clone(), CAP, 1.0).unwrap();
        desk.reserve(Reservation { expires_at_ms: 100, ..hard("a", 1.0, 1.0) }, 0, Resources::default()).unwrap();
        desk.reserve(hard("b", 1.0, 1.0), 0, Resources::default()).unwrap();
        assert_eq!(desk.purge_expired(100).unwrap().len(), 1);
        let desk = ReservationDesk::open(store, CAP, 1.0).unwrap();
        assert_eq!(desk.book().entries().len(), 1);
    }

    #[test]
    fn an_unreadable_entry_is_named_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        store.tree(TREE).unwrap().insert(b"broken", b"{not json").unwrap();
        let e = ReservationDesk::open(store.clone(), CAP, 1.0).err().expect("corrupt entry").to_string();
        assert!(e.contains("\"broken\""), "{e}");
        assert!(store.tree(TREE).unwrap().get(b"broken").unwrap().is_some(), "the entry was kept");
    }
}
