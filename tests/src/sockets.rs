//! Socket calls the standard library does not offer (bind before connect,
//! `MSG_FASTOPEN`, `sendmsg`, `sendmmsg`, any protocol number), for tests
//! that try the less common ways to send.
use std::{
    io,
    mem::size_of,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// A socket of `domain`, `kind`, `protocol`.
pub fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `addr` as a kernel socket address.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// bind(2).
pub fn bind(fd: &OwnedFd, to: SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr(to);
    // SAFETY: `sa` is a valid address of `len` bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } as isize).map(drop)
}

/// connect(2).
pub fn connect(fd: &OwnedFd, to: SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr(to);
    // SAFETY: as in `bind`.
    check(unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } as isize).map(drop)
}

/// sendto(2) with `flags`.
pub fn sendto(fd: &OwnedFd, data: &[u8], flags: i32, to: SocketAddr) -> io::Result<usize> {
    let (sa, len) = sockaddr(to);
    // SAFETY: `data` and `sa` are valid for the lengths given.
    check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            flags,
            (&raw const sa).cast(),
            len,
        )
    })
}

/// sendmsg(2) of `data` to `to`.
pub fn sendmsg(fd: &OwnedFd, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    let (mut sa, len) = sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below
    // outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut sa).cast();
    msg.msg_namelen = len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` describes valid buffers.
    check(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) })
}

/// sendmmsg(2): one datagram `data` to each of `to`; how many went.
pub fn sendmmsg(fd: &OwnedFd, data: &[u8], to: &[SocketAddr]) -> io::Result<usize> {
    let mut names: Vec<_> = to.iter().map(|a| sockaddr(*a)).collect();
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = names
        .iter_mut()
        .map(|(sa, len)| {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (sa as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *len;
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: every header points at buffers that outlive the call.
    check(
        unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) } as isize,
    )
}
