//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` move a whole batch of RADIUS packets
//! per system call, which is most of the cost of a small request on the fast path, and UDP
//! generic segmentation offload (`UDP_SEGMENT`, Linux 4.18; see `udp(7)`) sends a run of
//! equal-sized replies to one peer as one buffer that crosses the network stack once. Apart
//! from the allocator calls in `main`, this is otpgate's only `unsafe`; each block states what
//! makes it sound.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};

/// At most this many datagrams per segmented send (the kernel's `UDP_MAX_SEGMENTS` until Linux
/// 6.9 raised it to 128).
const GSO_MAX_SEGMENTS: usize = 64;
/// Only datagrams up to this size are sent segmented: it fits any IPv6 path (1280 octets of
/// minimum MTU less 48 of headers) and common IPv4 ones. The kernel refuses a segmented send
/// whose segments exceed the path MTU (it does not fragment them); such a run is sent again
/// one datagram at a time.
const GSO_MAX_SEGMENT_SIZE: usize = 1232;
/// A segmented send is one UDP payload for the kernel: it must stay under 65,507 octets.
const GSO_MAX_BYTES: usize = 65_000;

/// Whether this kernel segments UDP sends: not asked yet, yes, no.
static SEGMENTATION: AtomicU8 = AtomicU8::new(NOT_ASKED);
const NOT_ASKED: u8 = 0;
const SEGMENTS: u8 = 1;
const DOES_NOT_SEGMENT: u8 = 2;

/// Buffers for up to `capacity` datagrams of up to `len` octets each, with the kernel's
/// address and header arrays kept between calls (nothing is allocated per batch).
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    lengths: Vec<usize>,
    peers: Vec<Option<SocketAddr>>,
    count: usize,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs`/`headers` only ever point into this struct's own
// buffers, are rewritten before every use, and are never dereferenced outside `receive`,
// which takes `&mut self`.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(capacity: usize, len: usize) -> RecvBatch {
        RecvBatch {
            buffers: (0..capacity).map(|_| vec![0u8; len]).collect(),
            lengths: vec![0; capacity],
            peers: vec![None; capacity],
            count: 0,
            // SAFETY: all-zero is a valid value for these plain C structs.
            addrs: vec![unsafe { zeroed() }; capacity],
            iovecs: Vec::with_capacity(capacity),
            headers: vec![unsafe { zeroed() }; capacity],
        }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, then takes every one
    /// already queued, up to the capacity. Returns how many were received.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let capacity = self.buffers.len();
        self.iovecs.clear();
        self.iovecs
            .extend(self.buffers.iter_mut().map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            }));
        for ((header, iov), addr) in self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            // The kernel overwrote these fields last time; set them all again.
            header.msg_len = 0;
            header.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at a live iovec over a live buffer of the stated length
        // and at a live sockaddr_storage of the stated size; all outlive the call, and the
        // kernel writes no more than those lengths. `capacity` is the number of headers.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                capacity as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for i in 0..received {
            self.lengths[i] = self.headers[i].msg_len as usize;
            // A datagram longer than the buffer is truncated: flag it by its length.
            if self.headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.lengths[i] = self.buffers[i].len();
            }
            self.peers[i] = to_socket_addr(&self.addrs[i]);
        }
        self.count = received;
        Ok(received)
    }

    /// The `i`th datagram of the last batch and its sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let peer = self.peers.get(i).copied().flatten()?;
        let data = self.buffers.get(i)?.get(..*self.lengths.get(i)?)?;
        Some((data, peer))
    }
}

/// Whether a receive error only means "nothing arrived in time" (the socket's read timeout, a
/// signal), as opposed to a real failure worth counting.
pub fn is_idle(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sends every `(datagram, peer)` with as few `sendmmsg` calls as the kernel allows, each run
/// of equal-sized datagrams to one peer as one segmented send where the kernel can. Returns how
/// many could not be sent.
pub fn send_batch<B: AsRef<[u8]>>(socket: &UdpSocket, replies: &[(B, SocketAddr)]) -> usize {
    send_runs(socket, replies, kernel_segments(socket)).failed
}

/// Sends every `(datagram, peer)` as a datagram of its own (as a NAS sends its requests), with
/// as few `sendmmsg` calls as the kernel allows. Returns how many could not be sent.
pub fn send_each<B: AsRef<[u8]>>(socket: &UdpSocket, datagrams: &[(B, SocketAddr)]) -> usize {
    send_runs(socket, datagrams, false).failed
}

/// Whether the kernel segments UDP sends, asked once, of the first socket that sends. A kernel
/// before 4.18 does not know the `UDP_SEGMENT` option (ENOPROTOOPT); it would not refuse the
/// control message either, but ignore it and send a whole run as one datagram.
fn kernel_segments(socket: &UdpSocket) -> bool {
    match SEGMENTATION.load(Ordering::Relaxed) {
        SEGMENTS => true,
        DOES_NOT_SEGMENT => false,
        _ => {
            let mut value: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: value and len are live locals of the sizes given.
            let known = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            } == 0;
            SEGMENTATION.store(
                if known { SEGMENTS } else { DOES_NOT_SEGMENT },
                Ordering::Relaxed,
            );
            known
        }
    }
}

/// What [`send_runs`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sent {
    /// Datagrams that could not be sent.
    failed: usize,
    /// Segmented sends the kernel refused (e.g. a path MTU below the segment size), sent again
    /// one datagram at a time.
    unsegmented_runs: usize,
}

/// [`send_batch`], or [`send_each`] without `segmenting`.
fn send_runs<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    datagrams: &[(B, SocketAddr)],
    segmenting: bool,
) -> Sent {
    let runs = runs(datagrams, segmenting);
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = runs
        .iter()
        .map(|run| from_socket_addr(&datagrams[run.start].1))
        .collect();
    let mut iovecs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|(data, _)| libc::iovec {
            iov_base: data.as_ref().as_ptr() as *mut libc::c_void,
            iov_len: data.as_ref().len(),
        })
        .collect();
    let iovec_base = iovecs.as_mut_ptr();
    // One control message per run, in u64 words so each starts aligned for a `cmsghdr`.
    // SAFETY: CMSG_SPACE only computes a size.
    let control_len = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    let control_words = control_len.div_ceil(size_of::<u64>());
    let mut controls: Vec<u64> = vec![0; runs.len() * control_words];
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; runs.len()];
    for (((header, run), (addr, len)), control) in headers
        .iter_mut()
        .zip(&runs)
        .zip(addrs.iter_mut())
        .zip(controls.chunks_exact_mut(control_words))
    {
        header.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        header.msg_hdr.msg_namelen = *len;
        // SAFETY: run.start < datagrams.len(), the length of the iovec array.
        header.msg_hdr.msg_iov = unsafe { iovec_base.add(run.start) };
        header.msg_hdr.msg_iovlen = run.count as _;
        if run.count > 1 {
            header.msg_hdr.msg_control = control.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = control_len as _;
            // SAFETY: msg_control points at `control_len` zeroed, aligned octets, room for one
            // control message carrying a u16 (CMSG_SPACE above), so CMSG_FIRSTHDR is non-null
            // and CMSG_DATA points inside it; the u16 is written unaligned.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), run.size);
            }
        }
    }
    let mut sent = 0usize;
    let mut outcome = Sent::default();
    while sent < headers.len() {
        // SAFETY: headers[sent..] point at live iovecs over live datagram buffers (only read
        // by the kernel), live socket addresses of the stated lengths and live control
        // messages; none of those vectors is touched until the loop ends.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[sent..].as_mut_ptr(),
                (headers.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            sent += n as usize;
            continue;
        }
        // The kernel refused the first run left, as a whole (a segmented send is one buffer
        // to it). A refused segmented send goes again one datagram at a time; a single
        // datagram refused (e.g. an unreachable peer) is skipped.
        let refused = &runs[sent];
        if refused.count > 1 {
            let one_by_one = &datagrams[refused.start..refused.start + refused.count];
            outcome.failed += send_runs(socket, one_by_one, false).failed;
            outcome.unsegmented_runs += 1;
        } else {
            outcome.failed += 1;
        }
        sent += 1;
    }
    outcome
}

/// Consecutive datagrams sent as one: `count` datagrams of `size` octets to one peer, from
/// index `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    count: usize,
    size: u16,
}

/// Splits `datagrams` into runs that can each leave in one send: with `segmenting`, the
/// longest runs of equal-sized, non-empty datagrams (up to [`GSO_MAX_SEGMENT_SIZE`]) to one
/// peer within the kernel's limits (a segment size of 0 would mean "do not segment"); without
/// it, one datagram each.
fn runs<B: AsRef<[u8]>>(datagrams: &[(B, SocketAddr)], segmenting: bool) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::with_capacity(datagrams.len());
    for (i, (data, peer)) in datagrams.iter().enumerate() {
        let len = data.as_ref().len();
        let joins = |run: &Run| {
            segmenting
                && usize::from(run.size) == len
                && (1..=GSO_MAX_SEGMENT_SIZE).contains(&len)
                && datagrams[run.start].1 == *peer
                && run.count < GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / len)
        };
        match runs.last_mut() {
            Some(run) if joins(run) => run.count += 1,
            _ => runs.push(Run {
                start: i,
                count: 1,
                size: u16::try_from(len).unwrap_or(u16::MAX),
            }),
        }
    }
    runs
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // enough and suitably aligned for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_socket_addr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn batch_round_trip_v4_and_v6() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let server = UdpSocket::bind(local).expect("bind");
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let client = UdpSocket::bind(local).expect("bind");
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let to = server.local_addr().expect("addr");
            for i in 0..5u8 {
                client.send_to(&[i; 10], to).expect("send");
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut batch = RecvBatch::new(8, 16);
            assert_eq!(batch.receive(&server).expect("recv"), 5);
            let from = client.local_addr().expect("addr");
            let mut replies = Vec::new();
            for i in 0..5 {
                let (data, peer) = batch.get(i).expect("datagram");
                assert_eq!(data, &[i as u8; 10]);
                assert_eq!(peer, from);
                replies.push((data, peer));
            }
            assert!(batch.get(5).is_none());
            assert_eq!(send_batch(&server, &replies), 0);
            let mut buf = [0u8; 32];
            for i in 0..5u8 {
                let (n, _) = client.recv_from(&mut buf).expect("reply");
                assert_eq!(&buf[..n], &[i; 10]);
            }
            // The same batch, reused: its kernel arrays are set up afresh.
            client.send_to(&[9u8; 3], to).expect("send");
            assert_eq!(batch.receive(&server).expect("recv again"), 1);
            assert_eq!(batch.get(0), Some((&[9u8; 3][..], from)));
            assert!(batch.get(1).is_none());
        }
    }

    /// Sends a batch from a socket on `local` (set up by `configure`) to two peers, segmenting
    /// where the kernel can: runs of 70 x 20 octets to the first peer (64 + 6), 1 x 21 to it,
    /// 3 x 20 to the second, 1 x 20 to the first. Checks every datagram arrives once, whole and
    /// in order, and returns what the send did.
    fn send_to_two_peers(local: &str, configure: impl Fn(&UdpSocket)) -> Sent {
        let server = UdpSocket::bind(local).expect("bind");
        configure(&server);
        let peers: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let peer = UdpSocket::bind(local).expect("bind");
                peer.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                peer
            })
            .collect();
        let a = peers[0].local_addr().expect("addr");
        let b = peers[1].local_addr().expect("addr");
        let mut datagrams: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        for i in 0..70u8 {
            datagrams.push((vec![i; 20], a));
        }
        datagrams.push((vec![70; 21], a));
        for i in 71..74u8 {
            datagrams.push((vec![i; 20], b));
        }
        datagrams.push((vec![74; 20], a));
        let sizes: Vec<(usize, usize)> = runs(&datagrams, true)
            .iter()
            .map(|r| (r.count, usize::from(r.size)))
            .collect();
        assert_eq!(sizes, [(64, 20), (6, 20), (1, 21), (3, 20), (1, 20)]);
        assert!(kernel_segments(&server), "Linux >= 4.18 segments");
        let sent = send_runs(&server, &datagrams, true);
        let mut buf = [0u8; 64];
        for (data, peer) in &datagrams {
            let socket = if *peer == a { &peers[0] } else { &peers[1] };
            let (n, _) = socket.recv_from(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], data.as_slice(), "one datagram each, in order");
        }
        for peer in &peers {
            peer.set_nonblocking(true).expect("nonblocking");
            assert!(peer.recv_from(&mut buf).is_err(), "nothing twice");
        }
        sent
    }

    #[test]
    fn runs_of_equal_datagrams_to_one_peer_leave_segmented_and_arrive_whole() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            // A malformed control message would be refused and the runs sent one by one.
            assert_eq!(send_to_two_peers(local, |_| {}), Sent::default(), "{local}");
        }
    }

    #[test]
    fn a_refused_segmented_send_goes_again_one_datagram_at_a_time() {
        // Without UDP checksums the kernel refuses segmented sends (EINVAL).
        let sent = send_to_two_peers("127.0.0.1:0", |socket| {
            let on: libc::c_int = 1;
            // SAFETY: `on` is a live c_int of the size given.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    (&on as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "SO_NO_CHECK");
        });
        assert_eq!(
            sent,
            Sent {
                failed: 0,
                unsegmented_runs: 3
            }
        );
    }

    #[test]
    fn without_segmentation_or_past_its_limits_each_datagram_is_its_own_run() {
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let small = vec![(vec![0u8; 20], to); 3];
        assert_eq!(runs(&small, false).len(), 3);
        let large = vec![(vec![0u8; GSO_MAX_SEGMENT_SIZE + 1], to); 3];
        assert_eq!(runs(&large, true).len(), 3);
        let empty = vec![(Vec::new(), to); 3];
        assert_eq!(
            runs(&empty, true).len(),
            3,
            "a segment size of 0 would not segment"
        );
        let fitting = vec![(vec![0u8; 1200], to); 60];
        let counts: Vec<usize> = runs(&fitting, true).iter().map(|r| r.count).collect();
        assert_eq!(counts, [GSO_MAX_BYTES / 1200, 60 - GSO_MAX_BYTES / 1200]);
    }

    #[test]
    fn oversized_datagram_is_flagged_by_full_length() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(&[7u8; 100], server.local_addr().expect("addr"))
            .expect("send");
        let mut batch = RecvBatch::new(2, 16);
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(batch.receive(&server).expect("recv"), 1);
        assert_eq!(batch.get(0).map(|(d, _)| d.len()), Some(16));
    }
}
