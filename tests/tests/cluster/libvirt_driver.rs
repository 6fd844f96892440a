//! The agent's libvirt hypervisor is the `presage-libvirt` process: the agent reaches libvirt's
//! test driver through it, survives it dying, and says clearly when it cannot start it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use presage_agent::config::MigrationConfig;
use presage_agent::hypervisor::libvirt::LibvirtDriver;
use presage_agent::hypervisor::{Hypervisor, HypervisorError, MigrationTarget};

const TEST_URI: &str = "test:///default";

use presage_tests::built_binaries;

fn driver_program() -> PathBuf {
    built_binaries(&["presage-libvirt"]).join("presage-libvirt")
}

fn start(program: &Path, uri: &str) -> Result<LibvirtDriver, HypervisorError> {
    LibvirtDriver::start(uri, program, MigrationConfig::default().libvirt_settings())
}

#[test]
fn the_agent_reaches_libvirt_through_its_driver_process() {
    let hv = start(&driver_program(), TEST_URI).expect("the driver starts and opens libvirt's test driver");
    let pid = hv.driver_pid().expect("a driver runs");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("presage-libvirt"), "{}", exe.display());

    // The test driver's one domain, as libvirt itself describes it through the same URI here.
    let conn = virt::connect::Connect::open(Some(TEST_URI)).unwrap();
    let dom = conn.lookup_domain_by_name("test").unwrap();
    let (uuid, info) = (dom.uuid_string().unwrap(), dom.info().unwrap());
    let obs = hv.observe().unwrap();
    let test = obs.vms.iter().find(|v| v.name == "test").expect("the test domain is observed");
    assert_eq!((test.vm_id.as_str(), test.vcpus, test.memory_bytes), (uuid.as_str(), info.nr_virt_cpu, info.max_mem * 1024));
    assert!(obs.host_usage.is_none(), "a libvirt host's usage comes from the machine, not the hypervisor");
    let node = conn.node_info().unwrap();
    let cap = hv.capacity().unwrap();
    assert_eq!((cap.cpu_cores, cap.memory_bytes), (node.cpus, node.memory * 1024));

    let here = hv.inspect(&uuid).unwrap();
    assert!(here.present && here.running && !here.migrating && !here.incoming, "{here:?}");
    // Each kind of failure keeps its kind across the pipe.
    let target = MigrationTarget { host: "hv-b".into(), uri: String::new(), data_uri: String::new() };
    let e = hv
        .migrate_out(&uuid, &target, &|| panic!("a pre-check that fails starts nothing"), &|_| panic!("no progress from a pre-check"))
        .unwrap_err();
    assert!(matches!(&e, HypervisorError::Precheck(m) if m.contains("advertises no migration URI")), "{e}");
    let absent = "00000000-0000-4000-8000-000000000000";
    let e = hv.abort_migration(absent).unwrap_err();
    assert!(matches!(&e, HypervisorError::Migration(m) if m.contains("no longer on this host")), "{e}");
    let e = hv.complete_migration(&uuid).unwrap_err();
    assert!(e.to_string().contains("still runs here"), "{e}");
}

#[test]
fn a_driver_that_dies_is_replaced_on_the_next_call() {
    let hv = start(&driver_program(), TEST_URI).unwrap();
    let first = hv.driver_pid().unwrap();
    // SAFETY: kill(2) on the driver this test started.
    assert_eq!(unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hv.driver_pid().is_some() {
        assert!(Instant::now() < deadline, "the agent did not notice its driver died");
        std::thread::sleep(Duration::from_millis(20));
    }
    let obs = hv.observe().expect("the next call starts a new driver");
    assert!(obs.vms.iter().any(|v| v.name == "test"));
    let second = hv.driver_pid().unwrap();
    assert_ne!(first, second);
    // The dead driver was reaped, not left a zombie.
    let stat = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
    assert!(!stat.contains(") Z "), "{stat}");
}

#[test]
fn the_driver_stops_when_the_agent_lets_go_of_it() {
    let hv = start(&driver_program(), TEST_URI).unwrap();
    let pid = hv.driver_pid().unwrap();
    hv.shutdown();
    drop(hv);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Gone or reaped: its /proc entry disappears once the reader thread has waited for it.
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the driver outlived its agent");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_driver_or_a_refused_uri_is_a_clear_error_at_start() {
    let e = start(Path::new("/nonexistent/presage-libvirt"), TEST_URI).err().expect("no such program").to_string();
    assert!(e.contains("/nonexistent/presage-libvirt") && e.contains("cannot start the libvirt driver"), "{e}");
    let e = start(&driver_program(), "test:///no/such/config.xml").err().expect("libvirt refuses the URI").to_string();
    assert!(e.contains("test:///no/such/config.xml"), "{e}");
}
