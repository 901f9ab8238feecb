//! Socket readiness for one core through one epoll instance (redis's model:
//! one wake-up per burst of requests, not one per request).
//!
//! Why not glommio's sockets: glommio 0.9 arms an io_uring poll for a socket
//! each time a read finds it empty, and creates its ring without
//! `IORING_SETUP_COOP_TASKRUN`, so every such poll that completes while the
//! executor is running arrives with a reschedule IPI to the executor's CPU:
//! one per request under load (docs/PERFORMANCE.md has the profile).
//!
//! Here every client socket (and every peer connection, once its handshake
//! passed: [`crate::glommio_peer`]) is a non-blocking std socket registered once in
//! the core's epoll instance, edge-triggered, with a readiness flag and a
//! waker per direction ([`Registration`]). The [`Poller`]'s driver task
//! drains `epoll_wait(0)` while there is work, waking the tasks whose sockets
//! became ready; only when a drain finds nothing does it wait for the epoll
//! descriptor to become readable through glommio, so a single io_uring poll is
//! armed, and only while the executor has nothing else to do (it then sleeps
//! in the ring, where a completion wakes it without an IPI).
//!
//! Edge-triggered, because a task that does not read (waiting for its
//! commands' fsync, or its reply buffer full) leaves its socket readable:
//! level-triggered, every drain would report it again and the driver would
//! spin. With edges, a flag stays set until a read or write shows the socket
//! drained (EAGAIN, or a read shorter than the buffer: for a stream socket the
//! kernel copied all it had, and any later byte makes a new edge, epoll(7));
//! then the next edge sets it. `EPOLLOUT` is in the interest set from the
//! start instead of being added when a write would block: TCP reports write
//! space only after a write found none (`SOCK_NOSPACE`), so it costs no event
//! while writes succeed, and it saves an `epoll_ctl` per blocked write.
//!
//! Everything runs on the core's one thread: the driver sets a flag only
//! while it runs, never between a task's check of the flag and its storing a
//! waker, so no wake-up is lost.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::AsyncRead;

/// Events one `epoll_wait` returns at most; more stay queued in the kernel
/// for the next drain.
pub const EPOLL_EVENTS_MAX: usize = 256;

/// The interest set of every registered socket (see the module doc).
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// One core's epoll instance and its registered sockets. Cloning shares it.
#[derive(Clone)]
pub struct Poller {
    inner: Rc<PollerInner>,
}

struct PollerInner {
    epoll: OwnedFd,
    /// Registered sockets by the token their events carry.
    registrations: RefCell<HashMap<u64, Rc<Registration>>>,
    next_token: Cell<u64>,
}

/// What the driver knows about one socket, and who waits on it.
#[derive(Default)]
struct Registration {
    readable: Cell<bool>,
    writable: Cell<bool>,
    reader: Cell<Option<Waker>>,
    writer: Cell<Option<Waker>>,
}

/// Which way a task waits on a socket.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("readable", &self.readable.get())
            .field("writable", &self.writable.get())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registered = self.inner.registrations.borrow().len();
        write!(f, "Poller {{ registered: {registered} }}")
    }
}

impl Registration {
    fn ready(&self, direction: Direction) -> &Cell<bool> {
        match direction {
            Direction::Read => &self.readable,
            Direction::Write => &self.writable,
        }
    }

    fn waiter(&self, direction: Direction) -> &Cell<Option<Waker>> {
        match direction {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// Marks the direction ready and wakes its task, if one waits.
    fn wake(&self, direction: Direction) {
        self.ready(direction).set(true);
        if let Some(waker) = self.waiter(direction).take() {
            waker.wake();
        }
    }

    /// Runs `attempt` while the direction is ready; pending (the task's waker
    /// kept) once an attempt would block.
    fn poll_io<T>(
        &self,
        context: &Context<'_>,
        direction: Direction,
        mut attempt: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            if !self.ready(direction).get() {
                let waiter = self.waiter(direction);
                let waker = match waiter.take() {
                    Some(waker) if waker.will_wake(context.waker()) => waker,
                    _ => context.waker().clone(),
                };
                waiter.set(Some(waker));
                return Poll::Pending;
            }
            match attempt() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.ready(direction).set(false);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Poller {
    /// A new epoll instance and the task that drives it on this glommio
    /// executor; the task ends when the last clone of the poller is dropped
    /// and the driver next wakes.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
        // new descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let poller = Poller {
            inner: Rc::new(PollerInner {
                // SAFETY: `fd` was just created and is owned by nobody else.
                epoll: unsafe { OwnedFd::from_raw_fd(fd) },
                registrations: RefCell::default(),
                next_token: Cell::new(0),
            }),
        };
        glommio::spawn_local(drive(Rc::downgrade(&poller.inner))).detach();
        Ok(poller)
    }

    /// Registers a non-blocking socket; it starts ready both ways, so that
    /// the first read or write tries the syscall.
    fn register(&self, fd: BorrowedFd<'_>) -> io::Result<(u64, Rc<Registration>)> {
        let token = self.inner.next_token.get();
        self.inner.next_token.set(token + 1);
        let mut event = libc::epoll_event {
            events: INTEREST,
            u64: token,
        };
        // SAFETY: both descriptors are open for the call, and `event` is a
        // valid epoll_event that the kernel only reads.
        let result = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        let registration = Rc::new(Registration {
            readable: Cell::new(true),
            writable: Cell::new(true),
            ..Registration::default()
        });
        self.inner
            .registrations
            .borrow_mut()
            .insert(token, Rc::clone(&registration));
        Ok((token, registration))
    }

    /// Removes a socket before it is closed (a closed descriptor leaves the
    /// epoll set only once every duplicate of it is closed).
    fn deregister(&self, fd: BorrowedFd<'_>, token: u64) {
        self.inner.registrations.borrow_mut().remove(&token);
        // SAFETY: both descriptors are open; EPOLL_CTL_DEL ignores the event
        // pointer, which may be null since Linux 2.6.9.
        let result = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        assert!(
            result == 0,
            "removing a registered socket from epoll failed: {}",
            io::Error::last_os_error()
        );
    }

    /// A listening socket whose accepts go through this poller.
    pub fn listener(&self, listener: TcpListener) -> io::Result<PolledListener> {
        listener.set_nonblocking(true)?;
        let (token, registration) = self.register(listener.as_fd())?;
        Ok(PolledListener {
            poller: self.clone(),
            listener,
            token,
            registration,
        })
    }

    /// A connected socket whose reads and writes go through this poller.
    pub fn stream(&self, stream: TcpStream) -> io::Result<PolledStream> {
        stream.set_nonblocking(true)?;
        let (token, registration) = self.register(stream.as_fd())?;
        Ok(PolledStream {
            poller: self.clone(),
            stream,
            token,
            registration,
        })
    }

    /// Moves up to [`EPOLL_EVENTS_MAX`] ready events into the registrations
    /// without blocking; returns how many there were.
    fn drain(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        let capacity = i32::try_from(events.len()).expect("the event buffer fits an i32");
        // SAFETY: `events` is a writable buffer of `capacity` epoll_events;
        // a zero timeout never blocks.
        let count = unsafe {
            libc::epoll_wait(
                self.inner.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                capacity,
                0,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let count = count as usize;
        let registrations = self.inner.registrations.borrow();
        for event in &events[..count] {
            let flags = event.events;
            // An event of a socket deregistered since it was queued has no
            // registration left.
            let Some(registration) = registrations.get(&{ event.u64 }) else {
                continue;
            };
            // A hang-up or error wakes both ways, so that the next syscall
            // reports it.
            let broken = flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
            if broken || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 {
                registration.wake(Direction::Read);
            }
            if broken || flags & libc::EPOLLOUT as u32 != 0 {
                registration.wake(Direction::Write);
            }
        }
        Ok(count)
    }
}

/// The driver: drains ready events while there are any, yielding between
/// drains so that the woken tasks run; sleeps on the epoll descriptor through
/// glommio when a drain finds nothing.
async fn drive(poller: Weak<PollerInner>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS_MAX];
    // Whether the last wait could not be armed (see [`WATCHER_RETRY_MS`]).
    let mut degraded = false;
    loop {
        let Some(inner) = poller.upgrade() else {
            return;
        };
        let poller = Poller { inner };
        let count = poller
            .drain(&mut events)
            .expect("epoll_wait on the core's own epoll descriptor");
        if count > 0 {
            drop(poller);
            yield_to_reactor().await;
            continue;
        }
        let watcher = EpollWatcher::new(poller.inner.epoll.as_fd());
        drop(poller);
        match watcher {
            Ok(watcher) => {
                if degraded {
                    tracing::info!("descriptors free again: client sockets wait in the ring");
                    degraded = false;
                }
                watcher.readable().await;
            }
            Err(error) => {
                if !degraded {
                    tracing::warn!(
                        %error,
                        "cannot duplicate the epoll descriptor (out of descriptors?): \
                         polling client sockets every {WATCHER_RETRY_MS} ms until it can"
                    );
                    degraded = true;
                }
                glommio::timer::sleep(Duration::from_millis(WATCHER_RETRY_MS)).await;
            }
        }
    }
}

/// How often the driver drains when it cannot arm a wait on the epoll
/// descriptor (the process is out of descriptors, so `dup` fails): the
/// clients it already has are served meanwhile, a little later.
pub const WATCHER_RETRY_MS: u64 = 1;

/// How long the driver's yield between drains lasts: the shortest timer
/// glommio keeps (a timer already due when first polled completes at once,
/// without yielding).
pub const DRIVER_YIELD_US: u64 = 1;

/// Lets the tasks the driver just woke run, then resumes at the executor's
/// next look at its rings and timers, not before (see [`drive`]).
///
/// Through a timer rather than waking itself, for two reasons. A task that
/// wakes itself goes back to the end of the task queue, so a driver that
/// finds events on every drain keeps the queue from ever emptying, and the
/// executor reads its rings (fdatasync completions, hops) only when its
/// preemption timer fires. And glommio 0.9's executor can go to sleep with
/// tasks queued: `run_task_queues` reports that nothing ran when its
/// preemption check fires before the first queue runs (the thread lost its
/// CPU for longer than the timer between arming and checking it), and the
/// loop then parks until some completion comes; a woken task holds no timer
/// or poll that would end that sleep, and with the driver's design no socket
/// poll is armed while it has work. A due timer is such an event: the
/// executor processes timers before it parks (`spin_poll_io`), so a yield
/// through one cannot be slept through. (Tasks woken by other means stay
/// exposed; the main thread's wake signal bounds that,
/// [`crate::executor_thread`].)
async fn yield_to_reactor() {
    glommio::timer::Timer::new(Duration::from_micros(DRIVER_YIELD_US)).await;
}

/// Waits for the epoll descriptor to become readable (an event queued)
/// through glommio's ring. glommio 0.9 has no public call to poll an
/// arbitrary descriptor; its `TcpStream` built from a descriptor arms a
/// readability poll at once and, while that poll is pending, a read waits on
/// it without a syscall. The watcher owns a duplicate of the epoll
/// descriptor, closed when it is dropped; one watcher serves one wait (once
/// the poll has fired, glommio's read would try recv(2), which an epoll
/// descriptor refuses with ENOTSOCK). The test
/// `the_watcher_wakes_when_a_registered_socket_becomes_readable` checks that
/// glommio still behaves so.
struct EpollWatcher {
    stream: glommio::net::TcpStream,
}

impl EpollWatcher {
    fn new(epoll: BorrowedFd<'_>) -> io::Result<EpollWatcher> {
        let duplicate: RawFd = epoll.try_clone_to_owned()?.into_raw_fd();
        // SAFETY: `duplicate` is an open descriptor this watcher owns; glommio
        // only polls it and calls recv(2) on it, which fails without effect.
        let stream = unsafe { glommio::net::TcpStream::from_raw_fd(duplicate) };
        Ok(EpollWatcher { stream })
    }

    /// Ready once the epoll descriptor was seen readable.
    async fn readable(mut self) {
        poll_fn(|context| {
            match Pin::new(&mut self.stream).poll_read(context, &mut []) {
                Poll::Pending => Poll::Pending,
                // The poll fired (the recv that followed failed, as expected).
                Poll::Ready(_) => Poll::Ready(()),
            }
        })
        .await;
    }
}

/// A listening socket registered in a [`Poller`].
#[derive(Debug)]
pub struct PolledListener {
    poller: Poller,
    listener: TcpListener,
    token: u64,
    registration: Rc<Registration>,
}

impl PolledListener {
    /// The next connection, registered in the same poller.
    pub async fn accept(&self) -> io::Result<PolledStream> {
        let (stream, _) = poll_fn(|context| {
            self.registration
                .poll_io(context, Direction::Read, || self.listener.accept())
        })
        .await?;
        self.poller.stream(stream)
    }
}

impl Drop for PolledListener {
    fn drop(&mut self) {
        self.poller.deregister(self.listener.as_fd(), self.token);
    }
}

/// A connected, non-blocking socket registered in a [`Poller`].
pub struct PolledStream {
    poller: Poller,
    stream: TcpStream,
    token: u64,
    registration: Rc<Registration>,
}

impl std::fmt::Debug for PolledStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolledStream {{ fd: {} }}", self.stream.as_raw_fd())
    }
}

impl PolledStream {
    /// Reads what is available into `buf` (waiting until something is);
    /// 0 means the peer closed.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let capacity = buf.len();
        let read = poll_fn(|context| {
            self.registration
                .poll_io(context, Direction::Read, || (&self.stream).read(buf))
        })
        .await?;
        if read > 0 && read < capacity {
            // A short read took all the socket held (see the module doc):
            // the next read waits for an edge instead of finding EAGAIN.
            self.registration.readable.set(false);
        }
        Ok(read)
    }

    /// Writes all of `buf`, waiting for write space when the socket's send
    /// buffer is full.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let written = poll_fn(|context| {
                self.registration
                    .poll_io(context, Direction::Write, || (&self.stream).write(buf))
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if written < buf.len() {
                // A short write filled the send buffer: wait for the edge.
                self.registration.writable.set(false);
            }
            buf = &buf[written..];
        }
        Ok(())
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.stream.set_nodelay(nodelay)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The socket out of this poller, to be registered in another core's:
    /// a duplicate of its descriptor (the poller's own is deregistered and
    /// closed, so no event of it reaches this poller again). Gives the
    /// stream back if the descriptor cannot be duplicated (EMFILE).
    pub fn into_std(self) -> Result<TcpStream, (PolledStream, io::Error)> {
        match self.stream.try_clone() {
            Ok(duplicate) => Ok(duplicate),
            Err(error) => Err((self, error)),
        }
    }

    /// Shuts both directions, which ends a read or a write another task
    /// waits in (the socket turns readable and writable: an edge).
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)
    }
}

impl Drop for PolledStream {
    fn drop(&mut self) {
        self.poller.deregister(self.stream.as_fd(), self.token);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Runs `test` on a fresh glommio executor.
    fn on_executor<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { test().await })
            .expect("an executor")
            .join()
            .expect("the test's executor");
    }

    /// A listener on a free loopback port, registered in `poller`, and a
    /// blocking client connected to it with its server side accepted.
    async fn connected(poller: &Poller) -> (PolledListener, std::net::TcpStream, PolledStream) {
        let listener = poller
            .listener(TcpListener::bind("127.0.0.1:0").expect("bind"))
            .expect("register the listener");
        let address = listener.listener.local_addr().expect("an address");
        let client = std::net::TcpStream::connect(address).expect("connect");
        let server = listener.accept().await.expect("accept");
        (listener, client, server)
    }

    #[test]
    fn the_watcher_wakes_when_a_registered_socket_becomes_readable() {
        on_executor(|| async {
            let poller = Poller::new().expect("a poller");
            let (_listener, mut client, _server) = connected(&poller).await;
            // Let the driver see the accept's events and go back to sleep.
            while poller
                .drain(&mut [libc::epoll_event { events: 0, u64: 0 }; 4])
                .expect("drain")
                > 0
            {}
            let watcher = EpollWatcher::new(poller.inner.epoll.as_fd()).expect("a watcher");
            let waited = Rc::new(Cell::new(false));
            let flag = Rc::clone(&waited);
            let task = glommio::spawn_local(async move {
                watcher.readable().await;
                flag.set(true);
            });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert!(!waited.get(), "the watcher woke with nothing queued");
            client.write_all(b"x").expect("write");
            task.await;
            assert!(waited.get());
        });
    }

    #[test]
    fn reads_what_arrives_and_then_eof() {
        on_executor(|| async {
            let poller = Poller::new().expect("a poller");
            let (_listener, mut client, server) = connected(&poller).await;
            client.write_all(b"hello").expect("write");
            let mut buf = [0u8; 64];
            let read = server.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..read], b"hello");
            client.write_all(b" world").expect("write");
            let read = server.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..read], b" world");
            drop(client);
            assert_eq!(server.read(&mut buf).await.expect("read at EOF"), 0);
        });
    }

    #[test]
    fn a_write_larger_than_the_send_buffer_completes_as_the_peer_reads() {
        /// Far beyond loopback's socket buffers, so that writes are partial
        /// and the writer waits for write space more than once.
        const PAYLOAD_BYTES: usize = 16 << 20;
        on_executor(|| async {
            let poller = Poller::new().expect("a poller");
            let (_listener, client, server) = connected(&poller).await;
            let reader = std::thread::spawn(move || {
                let mut client = client;
                let mut received = Vec::new();
                client.read_to_end(&mut received).expect("read to EOF");
                received
            });
            let payload: Vec<u8> = (0..PAYLOAD_BYTES)
                .map(|index| (index % 251) as u8)
                .collect();
            server.write_all(&payload).await.expect("write_all");
            drop(server);
            let received = reader.join().expect("the reader thread");
            assert!(received == payload, "the peer received other bytes");
        });
    }

    #[test]
    fn many_connections_each_get_their_own_replies() {
        /// More connections than one drain returns events.
        const CONNECTIONS: usize = EPOLL_EVENTS_MAX + 44;
        on_executor(|| async {
            let poller = Poller::new().expect("a poller");
            let listener = poller
                .listener(TcpListener::bind("127.0.0.1:0").expect("bind"))
                .expect("register the listener");
            let address = listener.listener.local_addr().expect("an address");
            let clients = std::thread::spawn(move || {
                let mut clients: Vec<_> = (0..CONNECTIONS)
                    .map(|_| std::net::TcpStream::connect(address).expect("connect"))
                    .collect();
                for (index, client) in clients.iter_mut().enumerate() {
                    client
                        .write_all(format!("{index:05}").as_bytes())
                        .expect("write");
                }
                for (index, client) in clients.iter_mut().enumerate() {
                    let mut echo = [0u8; 5];
                    client.read_exact(&mut echo).expect("read the echo");
                    assert_eq!(echo, format!("{index:05}").as_bytes()[..]);
                }
            });
            let mut tasks = Vec::new();
            for _ in 0..CONNECTIONS {
                let stream = listener.accept().await.expect("accept");
                tasks.push(glommio::spawn_local(async move {
                    let mut buf = [0u8; 5];
                    let mut filled = 0;
                    while filled < buf.len() {
                        let read = stream.read(&mut buf[filled..]).await.expect("read");
                        assert!(read > 0, "EOF before the request");
                        filled += read;
                    }
                    stream.write_all(&buf).await.expect("write");
                }));
            }
            for task in tasks {
                task.await;
            }
            clients.join().expect("the clients' thread");
            assert_eq!(
                poller.inner.registrations.borrow().len(),
                1,
                "only the listener is left"
            );
        });
    }
}
