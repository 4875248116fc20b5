//! API.md, signature by signature: this file only compiles while every
//! name and signature of the contract is exactly as written there.

use std::time::Duration;

use mproc::{
    Address, AsyncResult, Client, Connection, Error, JoinHandle, JoinableQueue, Listener, Pool,
    PoolBuilder, Process, ProcessInfo, PutError, Queue, Sentinel, SimpleQueue,
};

#[mproc::target]
fn target0() {}

#[mproc::target]
fn target1(_x: u32) -> Result<(), String> {
    Ok(())
}

#[mproc::target]
fn returns(x: u32) -> u32 {
    x
}

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[allow(dead_code, clippy::type_complexity)]
fn contract() {
    assert_send::<Process>();
    assert_send::<JoinHandle<u32>>();
    assert_send::<Connection>();
    assert_send::<Queue<String>>();
    assert_send::<Listener>();
    assert_sync::<Connection>();
    assert_sync::<Queue<String>>();

    // Process
    let p: Process = Process::new(target0, ());
    let p: Process = p.with_name("p1").with_daemon(true);
    let _p1: Process = Process::new(target1, (1,));
    let _ = |p: &mut Process| p.set_name("x");
    let _ = |p: &mut Process| p.set_name(String::from("x"));
    let _: fn(&mut Process, bool) -> mproc::Result<()> = Process::set_daemon;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::start;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::run;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::join;
    let _: fn(&mut Process, Duration) -> mproc::Result<()> = Process::join_timeout;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::terminate;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::kill;
    let _: fn(&mut Process) -> mproc::Result<()> = Process::close;
    let _: fn(&mut Process) -> mproc::Result<bool> = Process::is_alive;
    let _: for<'a> fn(&'a Process) -> &'a str = Process::name;
    let _: fn(&Process) -> bool = Process::daemon;
    let _: fn(&Process) -> Option<u32> = Process::pid;
    let _: fn(&Process) -> Option<i32> = Process::exitcode;
    let _: for<'a> fn(&'a Process) -> &'a [u8] = Process::authkey;
    let _: for<'a> fn(&'a Process) -> mproc::Result<Sentinel<'a>> = Process::sentinel;
    drop(p);
    let _: fn() -> ProcessInfo = mproc::current_process;
    let _: fn() -> Option<ProcessInfo> = mproc::parent_process;
    let _: fn() -> Vec<ProcessInfo> = mproc::active_children;
    let _: fn() -> usize = mproc::cpu_count;
    let _: for<'a> fn(&'a ProcessInfo) -> &'a str = ProcessInfo::name;
    let _: fn(&ProcessInfo) -> Option<u32> = ProcessInfo::pid;
    let _: fn(&ProcessInfo) -> bool = ProcessInfo::daemon;
    let _: for<'a> fn(&'a ProcessInfo) -> &'a [u8] = ProcessInfo::authkey;
    let _: fn(&mut ProcessInfo) -> mproc::Result<bool> = ProcessInfo::is_alive;
    let _: fn(&mut ProcessInfo, Duration) -> mproc::Result<()> = ProcessInfo::join_timeout;
    let _: mproc::Result<JoinHandle<u32>> = mproc::spawn(returns, (1,));
    let _: fn(JoinHandle<u32>) -> mproc::Result<u32> = JoinHandle::join;
    let _ = mproc::init;

    // Pipe and Connection
    let _: fn(bool) -> mproc::Result<(Connection, Connection)> = mproc::pipe;
    let _: fn(&Connection, &str) -> mproc::Result<()> = Connection::send::<str>;
    let _: fn(&Connection) -> mproc::Result<String> = Connection::recv::<String>;
    let _: fn(&Connection, &[u8]) -> mproc::Result<()> = Connection::send_bytes;
    let _: fn(&Connection) -> mproc::Result<Vec<u8>> = Connection::recv_bytes;
    let _: fn(&Connection, usize) -> mproc::Result<Vec<u8>> = Connection::recv_bytes_max;
    let _: fn(&Connection, &mut [u8]) -> mproc::Result<usize> = Connection::recv_bytes_into;
    let _: fn(&Connection, Option<Duration>) -> mproc::Result<bool> = Connection::poll;
    let _: fn(&Connection) = Connection::close;
    let _: fn(&Connection) -> bool = Connection::closed;
    let _: fn(&Connection) -> bool = Connection::readable;
    let _: fn(&Connection) -> bool = Connection::writable;
    let _ = Connection::fileno;
    let _: fn(&[&dyn mproc::Waitable], Option<Duration>) -> mproc::Result<Vec<usize>> = mproc::wait;
    let _: fn(Address, Option<&[u8]>) -> mproc::Result<Listener> = Listener::bind;
    let _: for<'a> fn(&'a Listener) -> &'a Address = Listener::address;
    let _: fn(&Listener) -> mproc::Result<Connection> = Listener::accept;
    let _: fn(&Address, Option<&[u8]>) -> mproc::Result<Connection> = Client::connect;
    let _: Result<Address, _> = "127.0.0.1:5000".parse::<Address>();
    let _ = |a: &Address| a.to_string();

    // Queue
    let _: fn(usize) -> mproc::Result<Queue<String>> = Queue::<String>::new;
    let _ = |q: &Queue<String>| q.clone();
    let _: fn(&Queue<String>, String) -> Result<(), PutError<String>> = Queue::put;
    let _: fn(&Queue<String>, String, Duration) -> Result<(), PutError<String>> =
        Queue::put_timeout;
    let _: fn(&Queue<String>, String) -> Result<(), PutError<String>> = Queue::put_nowait;
    let _: fn(&Queue<String>) -> mproc::Result<String> = Queue::get;
    let _: fn(&Queue<String>, Duration) -> mproc::Result<String> = Queue::get_timeout;
    let _: fn(&Queue<String>) -> mproc::Result<String> = Queue::get_nowait;
    let _: fn(&Queue<String>) -> usize = Queue::qsize;
    let _: fn(&Queue<String>) -> bool = Queue::empty;
    let _: fn(&Queue<String>) -> bool = Queue::full;
    let _: fn(&Queue<String>) = Queue::close;
    let _: fn(&Queue<String>) -> mproc::Result<()> = Queue::join_thread;
    let _: fn(&Queue<String>) = Queue::cancel_join_thread;

    // JoinableQueue: every Queue method, plus task_done and join.
    assert_send::<JoinableQueue<String>>();
    assert_sync::<JoinableQueue<String>>();
    let _: fn(usize) -> mproc::Result<JoinableQueue<String>> = JoinableQueue::<String>::new;
    let _ = |q: &JoinableQueue<String>| q.clone();
    let _: fn(&JoinableQueue<String>) -> mproc::Result<()> = JoinableQueue::task_done;
    let _: fn(&JoinableQueue<String>) -> mproc::Result<()> = JoinableQueue::join;
    let _: fn(&JoinableQueue<String>, String) -> Result<(), PutError<String>> = JoinableQueue::put;
    let _: fn(&JoinableQueue<String>, String, Duration) -> Result<(), PutError<String>> =
        JoinableQueue::put_timeout;
    let _: fn(&JoinableQueue<String>, String) -> Result<(), PutError<String>> =
        JoinableQueue::put_nowait;
    let _: fn(&JoinableQueue<String>) -> mproc::Result<String> = JoinableQueue::get;
    let _: fn(&JoinableQueue<String>, Duration) -> mproc::Result<String> =
        JoinableQueue::get_timeout;
    let _: fn(&JoinableQueue<String>) -> mproc::Result<String> = JoinableQueue::get_nowait;
    let _: fn(&JoinableQueue<String>) -> usize = JoinableQueue::qsize;
    let _: fn(&JoinableQueue<String>) -> bool = JoinableQueue::empty;
    let _: fn(&JoinableQueue<String>) -> bool = JoinableQueue::full;
    let _: fn(&JoinableQueue<String>) = JoinableQueue::close;
    let _: fn(&JoinableQueue<String>) -> mproc::Result<()> = JoinableQueue::join_thread;
    let _: fn(&JoinableQueue<String>) = JoinableQueue::cancel_join_thread;

    // SimpleQueue
    assert_send::<SimpleQueue<String>>();
    assert_sync::<SimpleQueue<String>>();
    let _: fn() -> mproc::Result<SimpleQueue<String>> = SimpleQueue::<String>::new;
    let _ = |q: &SimpleQueue<String>| q.clone();
    let _: fn(&SimpleQueue<String>, String) -> mproc::Result<()> = SimpleQueue::put;
    let _: fn(&SimpleQueue<String>) -> mproc::Result<String> = SimpleQueue::get;
    let _: fn(&SimpleQueue<String>) -> bool = SimpleQueue::empty;
    let _: fn(&SimpleQueue<String>) = SimpleQueue::close;

    // Client with a deadline for its handshake (beyond CPython).
    let _: fn(&Address, Option<&[u8]>, Duration) -> mproc::Result<Connection> =
        Client::connect_timeout;
    let _: fn(PutError<String>) -> String = PutError::into_inner;
    let _ = |e: PutError<String>| -> Error { e.into() };
    let _ = |e: PutError<u8>| match e {
        PutError::Full(t) | PutError::Closed(t) | PutError::Disconnected(t) => t,
        PutError::Encode(t, _err) => t,
        _ => 0,
    };

    // Pool
    assert_send::<Pool>();
    assert_sync::<Pool>();
    assert_send::<AsyncResult<u32>>();
    assert_sync::<AsyncResult<u32>>();
    let _: fn(usize) -> mproc::Result<Pool> = Pool::new;
    let _: fn() -> PoolBuilder = Pool::builder;
    let _: mproc::Result<Pool> = Pool::builder()
        .processes(2)
        .initializer(target1, (1,))
        .maxtasksperchild(3)
        .build();
    let _ = |p: &Pool| -> mproc::Result<Vec<u32>> { p.map(returns, vec![1u32, 2]) };
    let _ = |p: &Pool| -> mproc::Result<Vec<u32>> { p.map_chunked(returns, [1u32], 1) };
    let _ = |p: &Pool| -> mproc::Result<Vec<u32>> { p.starmap(returns, vec![(1u32,)]) };
    let _ = |p: &Pool| -> mproc::Result<Vec<u32>> { p.starmap_chunked(returns, [(1u32,)], 1) };
    let _ = |p: &Pool| -> mproc::Result<Vec<mproc::Result<u32>>> {
        Ok(p.imap(returns, 0u32..)?.take(1).collect())
    };
    let _ = |p: &Pool| -> mproc::Result<Vec<mproc::Result<u32>>> {
        Ok(p.imap_chunked(returns, 0u32..4, 2)?.collect())
    };
    let _ = |p: &Pool| -> mproc::Result<Vec<mproc::Result<u32>>> {
        Ok(p.imap_unordered(returns, 0u32..4)?.collect())
    };
    let _ = |p: &Pool| -> mproc::Result<Vec<mproc::Result<u32>>> {
        Ok(p.imap_unordered_chunked(returns, 0u32..4, 2)?.collect())
    };
    let _ = |p: &Pool| -> mproc::Result<u32> { p.apply(returns, (1u32,)) };
    let _ = |p: &Pool| -> mproc::Result<AsyncResult<u32>> { p.apply_async(returns, (1u32,)) };
    let _ = |p: &Pool| -> mproc::Result<AsyncResult<Vec<u32>>> { p.map_async(returns, [1u32]) };
    let _ = |p: &Pool| -> mproc::Result<AsyncResult<Vec<u32>>> {
        p.map_async_chunked(returns, [1u32], 1)
    };
    let _ =
        |p: &Pool| -> mproc::Result<AsyncResult<Vec<u32>>> { p.starmap_async(returns, [(1u32,)]) };
    let _ = |p: &Pool| -> mproc::Result<AsyncResult<Vec<u32>>> {
        p.starmap_async_chunked(returns, [(1u32,)], 1)
    };
    let _: fn(&mut Pool) = Pool::close;
    let _: fn(&mut Pool) -> mproc::Result<()> = Pool::terminate;
    let _: fn(&mut Pool) -> mproc::Result<()> = Pool::join;
    let _: fn(AsyncResult<u32>) -> mproc::Result<u32> = AsyncResult::get;
    let _: fn(&AsyncResult<u32>, Duration) -> mproc::Result<u32> = AsyncResult::get_timeout;
    let _: fn(&AsyncResult<u32>) = AsyncResult::wait;
    let _: fn(&AsyncResult<u32>, Duration) -> bool = AsyncResult::wait_timeout;
    let _: fn(&AsyncResult<u32>) -> bool = AsyncResult::ready;
    let _: fn(&AsyncResult<u32>) -> Option<bool> = AsyncResult::successful;
    let _ = |e: Error| match e {
        Error::WorkerDied { pid, exitcode } => pid as i32 + exitcode,
        Error::Timeout
        | Error::PoolSize
        | Error::PoolMaxTasks
        | Error::PoolChunksize
        | Error::PoolNotRunning
        | Error::PoolStillRunning
        | Error::PoolTerminated => 0,
        Error::PoolBroken(why) => why.len() as i32,
        _ => 1,
    };

    // Errors
    let _ = |e: Error| match e {
        Error::Eof | Error::Empty | Error::QueueClosed => 0,
        Error::BufferTooShort(v) => v.len(),
        Error::TypeMismatch { .. } => 1,
        _ => 2,
    };

    // Issue 12 item 10: a spawn's errors name the process; closures are
    // refused by name; a JoinHandle prints.
    let _ = |e: Error| match e {
        Error::Panicked {
            name,
            pid,
            message,
            location,
        } => (name, pid, message + &location),
        Error::NoResult {
            name,
            pid,
            exitcode,
        } => (name, pid, exitcode.to_string()),
        Error::ClosureTarget { name } => (name, 0, String::new()),
        _ => (String::new(), 0, String::new()),
    };
    let _ = |h: &JoinHandle<u32>| format!("{h:?}");
}

#[test]
fn the_contract_compiles() {
    // The assertions are the compilation of `contract` itself.
    let _ = contract;
}

/// API.md "Synchronisation and shared state" (issue 16), except the
/// queues of that section.
#[allow(dead_code, clippy::type_complexity)]
fn sync_contract() {
    use mproc::{
        Array, ArrayGuard, Barrier, BoundedSemaphore, CondGuard, Condition, Event, Lock, LockGuard,
        RLock, Semaphore, SharedMemory, Value, ValueGuard,
    };
    fn shared<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned>() {}
    shared::<Lock>();
    shared::<RLock>();
    shared::<Semaphore>();
    shared::<BoundedSemaphore>();
    shared::<Event>();
    shared::<Condition>();
    shared::<Barrier>();
    shared::<Value<u64>>();
    shared::<Array<f32>>();
    shared::<SharedMemory>();

    // Lock / RLock
    let _: fn() -> mproc::Result<Lock> = Lock::new;
    let _: fn() -> mproc::Result<RLock> = RLock::new;
    let _: for<'a> fn(&'a Lock) -> mproc::Result<LockGuard<'a>> = Lock::acquire;
    let _: for<'a> fn(&'a Lock) -> mproc::Result<Option<LockGuard<'a>>> = Lock::try_acquire;
    let _: for<'a> fn(&'a Lock, Duration) -> mproc::Result<Option<LockGuard<'a>>> =
        Lock::acquire_timeout;
    let _: for<'a> fn(&'a RLock) -> mproc::Result<LockGuard<'a>> = RLock::acquire;
    let _: for<'a> fn(&'a RLock) -> mproc::Result<Option<LockGuard<'a>>> = RLock::try_acquire;
    let _: for<'a> fn(&'a RLock, Duration) -> mproc::Result<Option<LockGuard<'a>>> =
        RLock::acquire_timeout;
    let _ = |g: &LockGuard<'_>| -> bool { g.previous_owner_died() };

    // Semaphore / BoundedSemaphore
    let _: fn(u32) -> mproc::Result<Semaphore> = Semaphore::new;
    let _: fn(&Semaphore) -> mproc::Result<()> = Semaphore::acquire;
    let _: fn(&Semaphore) -> mproc::Result<bool> = Semaphore::try_acquire;
    let _: fn(&Semaphore, Duration) -> mproc::Result<bool> = Semaphore::acquire_timeout;
    let _: fn(&Semaphore) -> mproc::Result<()> = Semaphore::release;
    let _: fn(&Semaphore) -> u32 = Semaphore::get_value;
    let _: fn(u32) -> mproc::Result<BoundedSemaphore> = BoundedSemaphore::new;
    let _: fn(&BoundedSemaphore) -> mproc::Result<()> = BoundedSemaphore::acquire;
    let _: fn(&BoundedSemaphore) -> mproc::Result<bool> = BoundedSemaphore::try_acquire;
    let _: fn(&BoundedSemaphore, Duration) -> mproc::Result<bool> =
        BoundedSemaphore::acquire_timeout;
    let _: fn(&BoundedSemaphore) -> mproc::Result<()> = BoundedSemaphore::release;
    let _: fn(&BoundedSemaphore) -> u32 = BoundedSemaphore::get_value;

    // Event
    let _: fn() -> mproc::Result<Event> = Event::new;
    let _: fn(&Event) = Event::set;
    let _: fn(&Event) = Event::clear;
    let _: fn(&Event) -> bool = Event::is_set;
    let _: fn(&Event) = Event::wait;
    let _: fn(&Event, Duration) -> bool = Event::wait_timeout;

    // Condition
    let _: fn() -> mproc::Result<Condition> = Condition::new;
    let _: for<'a> fn(&'a Condition) -> mproc::Result<CondGuard<'a>> = Condition::acquire;
    let _ = |g: &mut CondGuard<'_>| -> mproc::Result<()> { g.wait() };
    let _ = |g: &mut CondGuard<'_>, t: Duration| -> mproc::Result<bool> { g.wait_timeout(t) };
    let _ = |g: &mut CondGuard<'_>| -> mproc::Result<()> { g.wait_for(|| true) };
    let _: fn(&Condition, usize) = Condition::notify;
    let _: fn(&Condition) = Condition::notify_all;

    // Barrier
    let _: fn(usize) -> mproc::Result<Barrier> = Barrier::new;
    let _: fn(&Barrier) -> mproc::Result<usize> = Barrier::wait;
    let _: fn(&Barrier, Duration) -> mproc::Result<usize> = Barrier::wait_timeout;
    let _: fn(&Barrier) = Barrier::abort;
    let _: fn(&Barrier) = Barrier::reset;
    let _: fn(&Barrier) -> usize = Barrier::parties;
    let _: fn(&Barrier) -> usize = Barrier::n_waiting;
    let _: fn(&Barrier) -> bool = Barrier::broken;
    let _ = |e: Error| matches!(e, Error::BrokenBarrier);

    // Value / Array
    let _: fn(u64) -> mproc::Result<Value<u64>> = Value::<u64>::new;
    let _: fn(&Value<u64>) -> u64 = Value::<u64>::get;
    let _: fn(&Value<u64>, u64) = Value::<u64>::set;
    let _: for<'a> fn(&'a Value<u64>) -> mproc::Result<ValueGuard<'a, u64>> = Value::<u64>::lock;
    let _ = |v: &Value<u64>| -> mproc::Result<()> {
        *v.lock()? += 1;
        Ok(())
    };
    let _: fn(usize) -> mproc::Result<Array<f64>> = Array::<f64>::new;
    let _: fn(&[f64]) -> mproc::Result<Array<f64>> = Array::<f64>::from_slice;
    let _: fn(&Array<f64>) -> usize = Array::<f64>::len;
    let _: fn(&Array<f64>) -> Vec<f64> = Array::<f64>::to_vec;
    let _: for<'a> fn(&'a Array<f64>) -> mproc::Result<ArrayGuard<'a, f64>> = Array::<f64>::lock;
    let _ = |a: &Array<f64>| -> mproc::Result<()> {
        let s: &mut [f64] = &mut a.lock()?;
        s[0] = 1.0;
        Ok(())
    };

    // SharedMemory
    let _: fn(usize) -> mproc::Result<SharedMemory> = SharedMemory::create;
    let _: fn(&str, usize) -> mproc::Result<SharedMemory> = SharedMemory::create_named;
    let _: fn(&str) -> mproc::Result<SharedMemory> = SharedMemory::open;
    let _: fn(&SharedMemory) -> &str = SharedMemory::name;
    let _: fn(&SharedMemory) -> usize = SharedMemory::len;
    let _: fn(&SharedMemory) -> mproc::Result<()> = SharedMemory::unlink;
}

#[test]
fn the_sync_contract_compiles() {
    let _ = sync_contract;
}

#[mproc::target]
fn contract_init(_level: u8) {}

/// API.md "Start methods and logging" and "Across machines".
#[allow(dead_code)]
fn start_methods_logging_and_launcher_contract() -> mproc::Result<()> {
    use mproc::{Context, Launcher, StartMethod};
    let _: fn(StartMethod) -> mproc::Result<()> = mproc::set_start_method;
    let _: fn() -> StartMethod = mproc::get_start_method;
    let _: fn(StartMethod) -> mproc::Result<Context> = mproc::get_context;
    let _ = [StartMethod::Spawn, StartMethod::Forkserver];
    let ctx = mproc::get_context(StartMethod::Spawn)?;
    let _: Process = ctx.process(contract_init, (1,));
    let _: JoinHandle<()> = ctx.spawn(contract_init, (1,))?;
    let _: Pool = ctx.pool(2)?;
    let _: Context = ctx.launcher(Launcher::srun());
    let _: fn(tracing::Level) = mproc::log_to_stderr;
    mproc::set_child_initializer(contract_init, (3,))?;
    let _: Launcher = Launcher::local();
    let _: Launcher = Launcher::srun()
        .args(["--partition=cpu", "--time=10"])
        .nodes(3);
    let _: Process = Process::new(contract_init, (1,)).with_launcher(Launcher::srun());
    let _: mproc::Result<Pool> = Pool::builder()
        .processes(6)
        .launcher(Launcher::srun())
        .build();
    Ok(())
}

#[test]
fn the_start_method_and_launcher_contract_compiles() {
    let _ = start_methods_logging_and_launcher_contract;
}
