//! The etcd store against real etcd members (Debian's etcd-server, started by the test): the
//! same conformance suite as sled and memory; fenced writes refused once the fence key is gone
//! or re-created, changing nothing; a batch over etcd's transaction limit refused whole; writes
//! going on with one member of three killed; an unreachable cluster a clear error.

use std::time::Duration;

use presage_store::{BatchOp, EtcdConfig, EtcdStore, Fence, KvStore, MAX_TXN_OPS, StoreError, conformance};
use presage_tests::etcd::EtcdCluster;

fn config(cluster: &EtcdCluster, prefix: &str) -> EtcdConfig {
    EtcdConfig { endpoints: cluster.endpoints(), prefix: prefix.into(), tls: None, request_timeout: Duration::from_secs(5) }
}

#[test]
fn the_etcd_store_passes_the_conformance_suite_fences_writes_and_outlives_a_member() {
    let mut cluster = EtcdCluster::start(3);
    // Each opening of one folder is the same prefix: reopening sees what was written.
    conformance::run_all(
        &|dir| {
            let prefix = format!("conformance/{}/", dir.file_name().unwrap().to_string_lossy());
            Box::new(EtcdStore::connect(&config(&cluster, &prefix)).unwrap())
        },
        true,
    );

    let store = EtcdStore::connect(&config(&cluster, "presage/")).unwrap();
    let t = store.tree("journal").unwrap();
    // Over etcd's limit: refused whole, naming the size; nothing written.
    let big: Vec<BatchOp> = (0..=MAX_TXN_OPS).map(|i| BatchOp::Insert(format!("k{i:04}").into_bytes(), b"v".to_vec())).collect();
    let e = t.apply(big).unwrap_err().to_string();
    assert!(e.contains(&format!("{}", MAX_TXN_OPS + 1)) && e.contains("nothing was written"), "{e}");
    assert_eq!(t.count_prefix(b"k").unwrap(), 0);
    // At the limit: all of it.
    let full: Vec<BatchOp> = (0..MAX_TXN_OPS).map(|i| BatchOp::Insert(format!("k{i:04}").into_bytes(), b"v".to_vec())).collect();
    t.apply(full).unwrap();
    assert_eq!(t.count_prefix(b"k").unwrap(), MAX_TXN_OPS);

    // Fencing on a leader key's create revision (as an election's leader key).
    let leader = store.tree("leader").unwrap();
    leader.insert(b"key", b"coordinator-1").unwrap();
    let revision = store.create_revision(b"presage/leader/key").unwrap().expect("the leader key exists");
    let fenced = store.fenced(Fence { key: b"presage/leader/key".to_vec(), create_revision: revision });
    let ft = fenced.tree("journal").unwrap();
    ft.insert(b"step-1", b"asked").unwrap();
    assert_eq!(t.get(b"step-1").unwrap(), Some(b"asked".to_vec()));
    // Another leader: the key is deleted and created again (a new create revision).
    leader.remove(b"key").unwrap();
    leader.insert(b"key", b"coordinator-2").unwrap();
    for write in [ft.insert(b"step-2", b"asked"), ft.remove(b"step-1"), ft.apply(vec![BatchOp::Insert(b"step-3".to_vec(), b"x".to_vec())])]
    {
        let e = write.unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{e}");
        assert!(e.to_string().contains("presage/leader/key"), "{e}");
    }
    assert_eq!(t.get(b"step-1").unwrap(), Some(b"asked".to_vec()), "the refused writes changed nothing");
    assert_eq!((t.get(b"step-2").unwrap(), t.get(b"step-3").unwrap()), (None, None));

    // One member of three killed: the other two are a quorum; writes and reads go on.
    cluster.kill(0);
    let survivors = EtcdConfig { endpoints: cluster.endpoints()[1..].to_vec(), ..config(&cluster, "presage/") };
    let after = EtcdStore::connect(&survivors).unwrap().tree("journal").unwrap();
    after.insert(b"step-4", b"asked").unwrap();
    assert_eq!(after.get(b"step-1").unwrap(), Some(b"asked".to_vec()));
    cluster.restart(0);
    let back = EtcdStore::connect(&config(&cluster, "presage/")).unwrap().tree("journal").unwrap();
    assert_eq!(back.get(b"step-4").unwrap(), Some(b"asked".to_vec()));

    // From inside an async runtime (the coordinator's): its own thread does the waiting.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cfg = config(&cluster, "presage/");
    let seen = rt.block_on(async move { EtcdStore::connect(&cfg).unwrap().tree("journal").unwrap().get(b"step-4").unwrap() });
    assert_eq!(seen, Some(b"asked".to_vec()));

    // Bad input: a tree name with '/', an empty prefix, nothing listening.
    assert!(store.tree("a/b").is_err());
    let e = EtcdStore::connect(&config(&cluster, "")).err().expect("an empty prefix is refused").to_string();
    assert!(e.contains("prefix"), "{e}");
    let nowhere = EtcdConfig { endpoints: vec!["http://127.0.0.1:9".into()], ..config(&cluster, "presage/") };
    let e =
        EtcdStore::connect(&EtcdConfig { request_timeout: Duration::from_secs(1), ..nowhere }).err().expect("nothing listens").to_string();
    assert!(e.contains("127.0.0.1:9"), "{e}");
}
