//! How a task's process is fenced in: its own process group (so a time
//! limit kills everything it started), CPU, memory, file-size, open-file
//! and process rlimits, no new privileges, and, where the kernel and our
//! privileges allow, an empty network namespace, a mount namespace with
//! the node's data directory covered by an empty read-only tmpfs, and the
//! unprivileged uid/gid (65534, "nobody", by default) for which the data
//! directory (mode 0700) is closed.
//!
//! What can be applied is found once per process by trying each measure
//! on a trivial program ([`Capabilities::probe`]); the node logs at start
//! what it could not apply and runs tasks with the rest.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;

/// Per-task limits, already capped by the node's config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu_secs: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
}

/// The isolation measures this process can apply (each `Err` says why
/// not).
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub network_namespace: Result<(), String>,
    pub mount_namespace: Result<(), String>,
    pub drop_privileges: Result<(), String>,
}

static PROBED: OnceLock<Capabilities> = OnceLock::new();

fn probe_program() -> Option<&'static str> {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn try_measure(what: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Result<(), String> {
    let Some(program) = probe_program() else {
        return Err("no /bin/true to probe with".into());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only makes raw system calls (no allocation, no
    // locks), which is what is allowed between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, what);
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}

impl Capabilities {
    /// Try each measure once per process (every node in it shares the
    /// answer).
    pub fn probe() -> &'static Capabilities {
        PROBED.get_or_init(|| {
            let network_namespace =
                try_measure(|| check(unsafe { libc::unshare(libc::CLONE_NEWNET) }));
            let mount_namespace = try_measure(|| {
                check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
                make_mounts_private()
            });
            let drop_privileges = if unsafe { libc::geteuid() } != 0 {
                Err("not running as root: tasks run as the node's own user".into())
            } else {
                try_measure(|| drop_to(65534, 65534))
            };
            Capabilities {
                network_namespace,
                mount_namespace,
                drop_privileges,
            }
        })
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn make_mounts_private() -> io::Result<()> {
    // Without this, a tmpfs mounted in the task's namespace would
    // propagate back to the node's (shared mounts are the default).
    check(unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

fn drop_to(uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    check(unsafe { libc::setgid(gid) })?;
    check(unsafe { libc::setuid(uid) })
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    check(unsafe { libc::setrlimit(resource, &lim) })
}

/// The measures a node applies to every task.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub network: bool,
    /// Paths covered by an empty tmpfs in the task's mount namespace.
    hide: Vec<CString>,
    /// uid and gid the task runs as.
    pub run_as: Option<(u32, u32)>,
}

impl Sandbox {
    /// What this node can apply, logging what it cannot. `hide` are the
    /// node's private paths (its data directory).
    pub fn new(node_id: &str, run_as: (u32, u32), hide: &[&Path]) -> Sandbox {
        let caps = Capabilities::probe();
        let warn = |what: &str, why: &str| {
            tracing::warn!(node = %node_id, measure = what, reason = why,
                "job sandbox: measure not applied");
        };
        if let Err(why) = &caps.network_namespace {
            warn("network namespace (tasks keep the host's network)", why);
        }
        if let Err(why) = &caps.mount_namespace {
            warn("mount namespace (data directory not hidden)", why);
        }
        if let Err(why) = &caps.drop_privileges {
            warn("unprivileged user", why);
        }
        let hide = if caps.mount_namespace.is_ok() {
            hide.iter()
                .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
                .collect()
        } else {
            Vec::new()
        };
        Sandbox {
            network: caps.network_namespace.is_ok(),
            hide,
            run_as: caps.drop_privileges.is_ok().then_some(run_as),
        }
    }

    /// For a node that runs no tasks: nothing probed, nothing applied.
    pub fn new_inert() -> Sandbox {
        Sandbox {
            network: false,
            hide: Vec::new(),
            run_as: None,
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "network namespace: {}, data dir hidden: {}, runs as: {}",
            if self.network { "yes" } else { "no" },
            if self.hide.is_empty() { "no" } else { "yes" },
            match self.run_as {
                Some((u, g)) => format!("uid {u} gid {g}"),
                None => "the node's user".into(),
            }
        )
    }

    /// Set up `cmd` to start inside the sandbox with `limits`.
    pub fn apply(&self, cmd: &mut tokio::process::Command, limits: Limits) {
        let network = self.network;
        let hide = self.hide.clone();
        let run_as = self.run_as;
        let pre_exec = move || -> io::Result<()> {
            // Its own process group (and session): a time limit kills
            // the group, whatever the program started.
            check(unsafe { libc::setsid() })?;
            if network {
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
            }
            if !hide.is_empty() {
                check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
                make_mounts_private()?;
                for p in &hide {
                    check(unsafe {
                        libc::mount(
                            c"tmpfs".as_ptr(),
                            p.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"size=4k,mode=000".as_ptr().cast(),
                        )
                    })?;
                }
            }
            // CPU: SIGXCPU at the soft limit, SIGKILL a second later.
            set_limit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1)?;
            // Memory the program writes (heap and private mappings), not
            // address space: V8 (Node.js) and Go reserve gigabytes of
            // address space they never touch, and would not start under
            // an address-space limit of a few hundred MiB.
            set_limit(libc::RLIMIT_DATA, limits.memory_bytes, limits.memory_bytes)?;
            set_limit(libc::RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes)?;
            set_limit(libc::RLIMIT_NOFILE, 256, 256)?;
            set_limit(libc::RLIMIT_CORE, 0, 0)?;
            if let Some((uid, gid)) = run_as {
                // Per user: bounds a fork bomb across all tasks.
                set_limit(libc::RLIMIT_NPROC, 1024, 1024)?;
                drop_to(uid, gid)?;
            }
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
            Ok(())
        };
        // SAFETY: as in `try_measure`: raw system calls only (the paths
        // were turned into C strings before the fork).
        unsafe {
            cmd.pre_exec(pre_exec);
        }
    }
}

/// Kill a task's whole process group.
pub fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 1 {
            // SAFETY: a plain system call; a group already gone is ESRCH.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
