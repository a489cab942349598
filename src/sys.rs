//! Facts about this process and host that several adapters need: who we run as, user
//! names for messages, the host name for temporary file names, whether a pid is alive.

use std::ffi::CStr;

use rustix::process::{Pid, Uid, geteuid, test_kill_process};

pub fn euid() -> u32 {
    geteuid().as_raw()
}

pub fn is_root() -> bool {
    geteuid().is_root()
}

/// What the user database says of `uid`, read through `read` while the entry is valid.
fn with_passwd<T>(uid: u32, read: impl FnOnce(&libc::passwd) -> Option<T>) -> Option<T> {
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length it is told), and
    // sets `found` to `pwd` or NULL; it is the reentrant form, safe from any thread.
    let rc = unsafe {
        libc::getpwuid_r(
            Uid::from_raw(uid).as_raw(),
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded and `found` points at `pwd`, whose strings point into
    // `buf`, both alive until this function returns.
    read(unsafe { &*found })
}

/// The login name in a passwd entry.
fn login(pwd: &libc::passwd) -> Option<String> {
    // SAFETY: pw_name is a NUL-terminated string of the entry.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_string)
}

/// The login name of `uid`, if the user database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    with_passwd(uid, login)
}

/// The name of group `gid`, if the group database knows it.
pub fn group_name(gid: u32) -> Option<String> {
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes only into `grp` and `buf` (whose length it is told), and
    // sets `found` to `grp` or NULL.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: getgrgid_r succeeded and `found` points at `grp`, whose gr_name points into `buf`.
    let name = unsafe { CStr::from_ptr((*found).gr_name) };
    name.to_str().ok().map(str::to_string)
}

/// True when `gid` is `uid`'s own group: its primary group, named like the user (the
/// user-private-group convention), so group permissions give nobody else anything.
pub fn is_private_group(uid: u32, gid: u32) -> bool {
    with_passwd(uid, |pwd| (pwd.pw_gid == gid).then(|| login(pwd)).flatten())
        .is_some_and(|user| group_name(gid).is_some_and(|group| group == user))
}

/// `name (uid N)`, or `uid N` for a user the database does not know.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The host name, reduced to `[A-Za-z0-9_-]` (at most 64 characters): safe inside a file
/// name, and enough to tell the hosts that share an archive over NFS apart.
pub fn host_tag() -> String {
    let uname = rustix::system::uname();
    let tag: String = uname
        .nodename()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if tag.is_empty() {
        "host".to_string()
    } else {
        tag
    }
}

/// True when a process `pid` exists (also when it belongs to another user).
pub fn process_alive(pid: i32) -> bool {
    let Some(pid) = Pid::from_raw(pid) else {
        return false;
    };
    match test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// This host's own addresses (every interface's, loopback included): a list line naming
/// one of them names this server, when nothing more precise (`self`, `cluster_name`)
/// does. Empty when the interfaces cannot be listed.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list and stores its head in `head`; it is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says which one it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(std::net::IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(std::net::IpAddr::from(sin6.sin6_addr.s6_addr).to_canonical());
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}
