//! `cargo xtask slurm-check`: runs the job-array recipe of `docs/slurm.md` on a throw-away
//! single-node Slurm cluster on this machine and checks that the merged results equal a
//! single-process run. Every daemon is a child of this process and is stopped by PID when the
//! check ends, whether it passed or failed.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

#[derive(clap::Args, Debug)]
pub struct SlurmCheckArgs {
    /// fc6 MNIST checkpoint for the cross job (e.g. from
    /// `cargo run --release -p stiff-train --example train_mnist -- --out /tmp/ckpt`).
    #[arg(long)]
    weights: PathBuf,
    /// Dataset directory holding MNIST (default: $STIFF_DATA_DIR). Never written.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Minutes to wait for the submitted jobs.
    #[arg(long, default_value_t = 30)]
    timeout_min: u64,
    /// Keep the temporary directory (configs, logs, results) for inspection.
    #[arg(long)]
    keep: bool,
}

const TOOLS: [&str; 7] = ["slurmctld", "slurmd", "munged", "munge", "sbatch", "sinfo", "scancel"];

/// The temporary cluster: its folder, its daemons (stopped on drop) and submitted jobs.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
    jobs: Vec<String>,
    keep: bool,
}

impl Cluster {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.out")))?;
        cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        eprintln!("slurm-check: started {name} (pid {})", child.id());
        self.daemons.push((name, child));
        Ok(())
    }

    /// Fails if a daemon has already exited.
    fn check_alive(&mut self) -> Result<()> {
        for (name, c) in &mut self.daemons {
            if let Some(st) = c.try_wait()? {
                bail!("{name} exited early ({st}); see {}", self.dir.display());
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.jobs.is_empty() {
            let _ = self.cmd("scancel").args(&self.jobs).stderr(Stdio::null()).status();
        }
        // Reverse start order: slurmd, slurmctld, munged. SIGTERM first, SIGKILL after 10 s.
        while let Some((name, mut c)) = self.daemons.pop() {
            let pid = c.id();
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
            eprintln!("slurm-check: stopped {name} (pid {pid})");
        }
        if self.keep {
            eprintln!("slurm-check: kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ensure_installed() -> Result<()> {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("slurm-check: {missing:?} missing; installing Debian's slurm-wlm and munge");
    let install = || Command::new("apt-get").args(["install", "-y", "slurm-wlm", "munge"]).status();
    if !install().is_ok_and(|s| s.success()) {
        sh(Command::new("apt-get").arg("update"))?;
        ensure!(install()?.success(), "apt-get install -y slurm-wlm munge failed");
    }
    let still: Vec<&str> = TOOLS.iter().copied().filter(|t| !have(t)).collect();
    ensure!(still.is_empty(), "still missing after installing: {still:?}");
    Ok(())
}

/// The scripts of `docs/slurm.md`: fenced blocks whose second line is `# file: NAME`.
fn doc_scripts(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("```bash") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.trim_start().starts_with("```")).collect();
            if let Some(name) = body.get(1).and_then(|l| l.strip_prefix("# file: ")) {
                out.push((name.trim().to_string(), body.join("\n") + "\n"));
            }
        }
    }
    out
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if ok()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn mem_mb() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(4 << 20);
    (kb / 1024).saturating_sub(1024).max(1024)
}

pub fn run(args: SlurmCheckArgs, root: &Path, cargo: &str) -> Result<()> {
    let uid = sh(Command::new("id").arg("-u"))?;
    ensure!(uid == "0", "slurm-check starts slurmd and munged and must run as root (uid is {uid})");
    let data = match args.data_dir.clone().or_else(|| std::env::var_os("STIFF_DATA_DIR").map(PathBuf::from)) {
        Some(d) => d,
        None => bail!("pass --data-dir (a folder with MNIST) or set STIFF_DATA_DIR"),
    };
    // The jobs run in the temporary folder: a relative path would point elsewhere there.
    let data = fs::canonicalize(&data).with_context(|| format!("--data-dir {}", data.display()))?;
    let weights = fs::canonicalize(&args.weights).with_context(|| format!("--weights {}", args.weights.display()))?;
    ensure_installed()?;

    eprintln!("slurm-check: building stiff once");
    let stiff = crate::build_stiff(root, cargo)?;
    sh(Command::new(&stiff).args(["data", "verify", "--data-dir"]).arg(&data))
        .context("the data must be present before submitting (the tasks run with --no-fetch)")?;

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let dir = std::env::temp_dir().join(format!("stiff-slurm-check-{}-{nanos}", std::process::id()));
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let mut cl = Cluster {
        conf: dir.join("slurm.conf"),
        dir: dir.clone(),
        daemons: Vec::new(),
        jobs: Vec::new(),
        keep: args.keep,
    };
    for sub in ["munge", "state", "spool", "logs", "jobs", "out", "single"] {
        fs::create_dir(dir.join(sub))?;
    }
    fs::set_permissions(dir.join("munge"), fs::Permissions::from_mode(0o700))?;

    // munge: a fresh key and a private socket.
    let key = dir.join("munge/munge.key");
    let mut bytes = vec![0u8; 1024];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    fs::write(&key, &bytes)?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    let sock = dir.join("munge/munge.socket");
    let mut m = Command::new("munged");
    m.arg("--foreground")
        .arg("--force")
        .arg(format!("--key-file={}", key.display()))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", dir.join("munge/munged.pid").display()))
        .arg(format!("--log-file={}", dir.join("munge/munged.log").display()))
        .arg(format!("--seed-file={}", dir.join("munge/munged.seed").display()));
    cl.spawn("munged", m)?;
    wait_for("munged's socket", Duration::from_secs(20), || {
        cl.check_alive()?;
        Ok(sock.exists())
    })?;
    let cred = sh(Command::new("munge").arg("-n").arg(format!("--socket={}", sock.display())))?;
    let mut un = Command::new("unmunge");
    un.arg(format!("--socket={}", sock.display())).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = un.spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), cred.as_bytes())?;
    ensure!(child.wait()?.success(), "munge round trip failed");

    // slurm.conf: one node, no cgroups, private ports, all state in the temporary folder.
    let host = sh(Command::new("hostname").arg("-s"))?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let port = 20_000 + (std::process::id() % 10_000) as u16 * 2;
    let d = dir.display();
    let conf = format!(
        "ClusterName=stiffcheck\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
         SlurmctldPort={port}\nSlurmdPort={}\nAuthType=auth/munge\nCredType=cred/munge\n\
         AuthInfo=socket={}\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\n\
         SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n\
         ReturnToService=2\nMpiDefault=none\nKillWait=5\nInactiveLimit=0\nMaxArraySize=100\n\
         NodeName={host} CPUs={cpus} RealMemory={} State=UNKNOWN\n\
         PartitionName=check Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        port + 1,
        sock.display(),
        mem_mb()
    );
    fs::write(&cl.conf, conf)?;
    let mut c = cl.cmd("slurmctld");
    c.args(["-D", "-i", "-f"]).arg(&cl.conf);
    cl.spawn("slurmctld", c)?;
    let mut c = cl.cmd("slurmd");
    c.args(["-D", "-N", &host, "-f"]).arg(&cl.conf);
    cl.spawn("slurmd", c)?;
    let conf_path = cl.conf.clone();
    let idle = wait_for("the node to become idle", Duration::from_secs(60), || {
        cl.check_alive()?;
        let out = Command::new("sinfo").env("SLURM_CONF", &conf_path).args(["-h", "-o", "%T"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "idle")
    });
    if let Err(e) = idle {
        eprintln!(
            "--- slurmctld.log\n{}\n--- slurmd.log\n{}",
            tail(&dir.join("slurmctld.log"), 20),
            tail(&dir.join("slurmd.log"), 20)
        );
        return Err(e);
    }
    eprintln!("slurm-check: single-node cluster `{host}` up ({cpus} CPUs)");

    // The recipe, exactly as docs/slurm.md has it.
    let doc = fs::read_to_string(root.join("docs/slurm.md"))?;
    let scripts = doc_scripts(&doc);
    for want in ["fig8-array.sbatch", "cross-array.sbatch", "merge.sbatch"] {
        ensure!(scripts.iter().any(|(n, _)| n == want), "docs/slurm.md has no block `# file: {want}`");
    }
    for (name, body) in &scripts {
        fs::write(dir.join("jobs").join(name), body)?;
    }
    let out = dir.join("out");
    let env = [
        ("STIFF", stiff.clone()),
        ("DATA", data.clone()),
        ("OUT", out.clone()),
        ("WEIGHTS", weights.clone()),
        ("QUICK", "1".into()),
        ("ROWS", "train:2000".into()),
        ("COLS", "test:500".into()),
        ("TILE_ROWS", "256".into()),
    ];
    let logs = dir.join("logs");
    let sbatch = |cl: &Cluster, extra: &[String], script: &str| -> Command {
        let mut c = cl.cmd("sbatch");
        c.current_dir(&dir).envs(env.iter().map(|(k, v)| (*k, v.as_os_str())));
        c.arg(format!("--output={}/%x-%A_%a.out", logs.display())).args(extra).arg(dir.join("jobs").join(script));
        c
    };
    let parsable = |s: String| s.split(';').next().unwrap_or_default().to_string();
    let a = parsable(sh(&mut sbatch(&cl, &["--parsable".into(), "--array=1-7:2".into()], "fig8-array.sbatch"))?);
    cl.jobs.push(a.clone());
    let b = parsable(sh(&mut sbatch(&cl, &["--parsable".into()], "cross-array.sbatch"))?);
    cl.jobs.push(b.clone());
    eprintln!("slurm-check: submitted fig8 array {a} (--array=1-7:2) and cross array {b}; merge after both");
    let t0 = Instant::now();
    let mut merge = sbatch(
        &cl,
        &[
            "--wait".into(),
            "--parsable".into(),
            format!("--dependency=afterok:{a}:{b}"),
            "--kill-on-invalid-dep=yes".into(),
        ],
        "merge.sbatch",
    );
    merge.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut waiter = merge.spawn()?;
    let deadline = Duration::from_secs(args.timeout_min * 60);
    loop {
        cl.check_alive()?;
        if waiter.try_wait()?.is_some() {
            break;
        }
        if t0.elapsed() > deadline {
            let _ = waiter.kill();
            bail!("jobs did not finish within {} minutes", args.timeout_min);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut id = String::new();
    waiter.stdout.take().expect("piped").read_to_string(&mut id)?;
    let m = parsable(id.trim().to_string());
    ensure!(!m.is_empty(), "sbatch printed no job id for merge.sbatch");
    cl.jobs.push(m.clone());
    let mut job_logs: Vec<PathBuf> = fs::read_dir(&logs)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    job_logs.sort();
    // sbatch --wait's own status is not enough (a job cancelled for a failed dependency can
    // report success): every task of the three jobs must be COMPLETED (exit 0).
    let mut bad = Vec::new();
    for id in [&a, &b, &m] {
        let text = sh(cl.cmd("scontrol").args(["-o", "show", "job", id.as_str()]))?;
        for line in text.lines() {
            let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("?").to_string();
            if field("JobState=") != "COMPLETED" {
                bad.push(format!(
                    "job {} {}: {} (exit {})",
                    field("JobId="),
                    field("JobName="),
                    field("JobState="),
                    field("ExitCode=")
                ));
            }
        }
    }
    if !bad.is_empty() {
        for l in &job_logs {
            eprintln!("--- {}\n{}", l.display(), tail(l, 6));
        }
        bail!("not every Slurm task completed:\n  {}", bad.join("\n  "));
    }
    eprintln!("slurm-check: all jobs COMPLETED in {:.0} s; {} task logs", t0.elapsed().as_secs_f64(), job_logs.len());
    for l in job_logs.iter().filter(|l| l.to_string_lossy().contains("stiff-merge")) {
        eprintln!("{}", tail(l, 4));
    }
    cl.jobs.clear();

    // The same work in one process, then byte-for-byte comparison of the merged results.
    eprintln!("slurm-check: single-process run for comparison");
    let single = dir.join("single");
    sh(Command::new(&stiff)
        .args(["reproduce", "fig8", "--quick", "--no-fetch", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&single))?;
    sh(Command::new(&stiff)
        .args(["cross", "--preset", "fc6", "--weights"])
        .arg(&weights)
        .args(["--dataset", "mnist", "--data-dir"])
        .arg(&data)
        .args(["--rows", "train:2000", "--cols", "test:500", "--tile-rows", "256", "--quiet", "--out"])
        .arg(single.join("cross")))?;
    let pairs = [
        ("fig8/results.csv", "fig8/results.csv"),
        ("cross/class_sign.csv", "cross/class_sign.csv"),
        ("cross/class_cosine.csv", "cross/class_cosine.csv"),
        ("cross/columns.csv", "cross/columns.csv"),
    ];
    for (x, y) in pairs {
        let (p, q) = (out.join(x), single.join(y));
        let (u, v) = (fs::read(&p).with_context(|| format!("{}", p.display()))?, fs::read(&q)?);
        ensure!(u == v, "{} (Slurm shards) differs from {} (single process)", p.display(), q.display());
        eprintln!("slurm-check: {x}: sharded == single process ({} bytes)", u.len());
    }
    eprintln!("slurm-check: PASSED");
    Ok(())
}
