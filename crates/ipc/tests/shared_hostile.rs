//! Hostile shared objects: a record that arrives with a handle whose
//! mapping is of another kind, too small, or garbage is refused with an
//! error before anything is mapped past its end or trusted (issue 16,
//! "a handle whose mapping is too small or garbage must be an error,
//! never UB"). The records go through the same handle table a launch uses
//! (`handles::collect_outgoing` / `with_incoming`), in one process.

use mproc_ipc::__private::{handles, sys};
use mproc_ipc::{Array, Event, Lock, RLock, SharedMemory, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Encodes `value` as for a launch; its handles duplicated, as received.
fn send<T: Serialize>(value: &T) -> (Vec<u8>, Vec<sys::OwnedHandle>) {
    let (bytes, raws) = handles::collect_outgoing(|| postcard::to_allocvec(value));
    let owned = raws
        .into_iter()
        // SAFETY: the raw handles belong to `value`, alive for the call.
        .map(|r| sys::duplicate(unsafe { sys::borrow_raw(r) }).unwrap())
        .collect();
    (bytes.unwrap(), owned)
}

/// Decodes as a child does; the error text on failure.
fn receive<T: DeserializeOwned>(bytes: &[u8], owned: Vec<sys::OwnedHandle>) -> Result<T, String> {
    handles::with_incoming(owned, || postcard::from_bytes::<T>(bytes)).map_err(|e| e.to_string())
}

/// A block record as `sync/block.rs` writes it, for forging.
#[derive(Serialize, Deserialize)]
struct Forged {
    kind: u64,
    layout: (u32, u32, u64),
    nonce: u64,
    handles: ForgedHandles,
}

#[derive(Serialize, Deserialize)]
enum ForgedHandles {
    Launch(Vec<u32>),
    Held { pid: u32, values: Vec<u64> },
}

const LOCK_KIND: u64 = 0x6d70_4c6f_636b_0001;

#[test]
fn a_round_trip_through_the_handle_table_works() {
    let lock = Lock::new().unwrap();
    let (bytes, owned) = send(&lock);
    let got: Lock = receive(&bytes, owned).unwrap();
    let g = lock.acquire().unwrap();
    assert!(got.try_acquire().unwrap().is_none(), "the same lock");
    drop(g);
}

#[test]
fn an_object_of_another_kind_is_refused() {
    let (bytes, owned) = send(&Lock::new().unwrap());
    assert!(receive::<RLock>(&bytes, owned).is_err());
    let (bytes, owned) = send(&Lock::new().unwrap());
    assert!(receive::<Event>(&bytes, owned).is_err());
    let (bytes, owned) = send(&Value::new(1u32).unwrap());
    assert!(
        receive::<Value<u64>>(&bytes, owned).is_err(),
        "another size"
    );
    let (bytes, owned) = send(&Array::<u8>::new(4).unwrap());
    assert!(
        receive::<Array<u64>>(&bytes, owned).is_err(),
        "4 u64 do not fit in 4 bytes"
    );
}

#[test]
fn a_mapping_too_small_for_its_claimed_layout_is_refused() {
    // A real 8-byte shared memory object, claimed to be a Lock.
    let small = SharedMemory::create(8).unwrap();
    let (_, owned) = send(&small);
    let forged = postcard::to_allocvec(&Forged {
        kind: LOCK_KIND,
        layout: (1, 2, 0),
        nonce: 0,
        handles: ForgedHandles::Launch(vec![0]),
    })
    .unwrap();
    // (postcard keeps no custom error text: the error itself is the proof)
    assert!(receive::<Lock>(&forged, owned).is_err());
}

#[test]
fn a_garbage_mapping_of_the_right_size_is_refused() {
    let junk = SharedMemory::create(1 << 16).unwrap();
    junk.write(0, &[0xA5; 4096]).unwrap();
    let (_, owned) = send(&junk);
    let forged = postcard::to_allocvec(&Forged {
        kind: LOCK_KIND,
        layout: (1, 2, 0),
        nonce: 0,
        handles: ForgedHandles::Launch(vec![0]),
    })
    .unwrap();
    assert!(receive::<Lock>(&forged, owned).is_err());
}

#[test]
fn lying_layouts_and_missing_handles_are_refused() {
    let (_, owned) = send(&Lock::new().unwrap());
    let huge = postcard::to_allocvec(&Forged {
        kind: LOCK_KIND,
        layout: (u32::MAX, u32::MAX, u64::MAX),
        nonce: 0,
        handles: ForgedHandles::Launch(vec![0]),
    })
    .unwrap();
    assert!(receive::<Lock>(&huge, owned).is_err());
    let missing = postcard::to_allocvec(&Forged {
        kind: LOCK_KIND,
        layout: (1, 2, 0),
        nonce: 0,
        handles: ForgedHandles::Launch(vec![7]),
    })
    .unwrap();
    assert!(receive::<Lock>(&missing, Vec::new()).is_err());
}

#[test]
fn shared_memory_announcing_more_than_its_mapping_is_refused() {
    #[derive(Serialize)]
    enum ShmForged {
        Anonymous { handle: u32, len: u64 },
    }
    let small = SharedMemory::create(8).unwrap();
    let (_, owned) = send(&small);
    let forged = postcard::to_allocvec(&ShmForged::Anonymous {
        handle: 0,
        len: 1 << 40,
    })
    .unwrap();
    assert!(receive::<SharedMemory>(&forged, owned).is_err());
    // A Lock's handle where shared memory is expected maps, but its
    // announced length is then checked against it.
    let (_, owned) = send(&Lock::new().unwrap());
    let forged = postcard::to_allocvec(&ShmForged::Anonymous {
        handle: 0,
        len: 1 << 30,
    })
    .unwrap();
    assert!(receive::<SharedMemory>(&forged, owned).is_err());
}

#[test]
fn outside_a_launch_an_object_travels_as_the_senders_handle() {
    // Encoded outside a launch (a Queue item, a message): the record names
    // this process's handles; decoding opens them from it.
    let lock = Lock::new().unwrap();
    let bytes = postcard::to_allocvec(&lock).unwrap();
    let same: Lock = postcard::from_bytes(&bytes).unwrap();
    let g = lock.acquire().unwrap();
    assert!(same.try_acquire().unwrap().is_none(), "the same lock");
    drop(g);
    let shm = SharedMemory::create(16).unwrap();
    shm.write(0, b"held").unwrap();
    let bytes = postcard::to_allocvec(&shm).unwrap();
    let same: SharedMemory = postcard::from_bytes(&bytes).unwrap();
    let mut buf = [0u8; 4];
    same.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"held");
}

#[test]
fn a_held_record_with_a_wrong_nonce_or_a_bogus_process_is_refused() {
    let lock = Lock::new().unwrap();
    let mut record: Forged = postcard::from_bytes(&postcard::to_allocvec(&lock).unwrap()).unwrap();
    let ForgedHandles::Held { pid, values } = &record.handles else {
        panic!("outside a launch the record names the sender's handles");
    };
    let (pid, values) = (*pid, values.clone());
    assert_eq!(pid, std::process::id());
    // The real handles with another nonce: another block, refused.
    record.nonce ^= 1;
    let bytes = postcard::to_allocvec(&record).unwrap();
    assert!(postcard::from_bytes::<Lock>(&bytes).is_err());
    record.nonce ^= 1;
    assert!(postcard::from_bytes::<Lock>(&postcard::to_allocvec(&record).unwrap()).is_ok());
    let forged = |pid: u32, values: Vec<u64>| {
        postcard::to_allocvec(&Forged {
            kind: LOCK_KIND,
            layout: (1, 2, 0),
            nonce: record.nonce,
            handles: ForgedHandles::Held { pid, values },
        })
        .unwrap()
    };
    // A process that does not exist (pid 0 is never a user process).
    assert!(postcard::from_bytes::<Lock>(&forged(0, values.clone())).is_err());
    // Handle values that name something else (0: stdin on Unix) or nothing.
    assert!(postcard::from_bytes::<Lock>(&forged(pid, vec![0; values.len()])).is_err());
    assert!(
        postcard::from_bytes::<Lock>(&forged(pid, vec![u32::MAX as u64 - 3; values.len()]))
            .is_err()
    );
    // Far too many handles.
    assert!(postcard::from_bytes::<Lock>(&forged(pid, vec![0; 100])).is_err());
}
