//! The S3 API with real clients, against a cell of separate processes (3 masters, 3 zones
//! x 2 volume servers x 2 disks, a frontend serving `--s3`): boto3 exercising every
//! operation, bad input answered with the right S3 error and no change, aws-cli and rclone.
//! The clients are installed by `scripts/s3-clients.sh` (a venv with boto3 and awscli,
//! Debian's rclone), which this test runs first (idempotent, quick when present).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Cell, CellSpec};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn venv() -> PathBuf {
    match std::env::var_os("CELLAR_S3_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cellar/s3-venv"),
    }
}

fn shown(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cell serving S3, and an access key made with `cellar admin key create`.
struct S3Cell {
    cell: Cell,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

fn start(spec: CellSpec) -> S3Cell {
    let port = cellar_bench::process::free_port().expect("port");
    let mut spec = spec;
    spec.frontend_args.extend(["--s3".to_string(), format!("127.0.0.1:{port}")]);
    let cell = Cell::start(&spec);
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "key", "create", "--master", &cell.masters.join(","), "--name", "s3 test"])
        .output()
        .expect("run cellar admin key create");
    assert!(out.status.success(), "{}", shown("cellar admin key create", &out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    S3Cell {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key: field("access_key"),
        secret_key: field("secret_key"),
        cell,
    }
}

fn run<A: AsRef<std::ffi::OsStr>>(s3: &S3Cell, program: &Path, args: &[A]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .env("S3_ENDPOINT", &s3.endpoint)
        .env("S3_ACCESS_KEY", &s3.access_key)
        .env("S3_SECRET_KEY", &s3.secret_key)
        .env("S3_REGION", "us-east-1")
        .env("VENV", venv())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// Runs `scripts/s3-clients.sh` (idempotent; both tests call it, and it may run twice at
/// once: the script takes a lock, so the second waits and then finds everything there).
fn install_clients() {
    let install = Command::new("bash")
        .arg(workspace_root().join("scripts/s3-clients.sh"))
        .output()
        .expect("run s3-clients.sh");
    assert!(install.status.success(), "{}", shown("scripts/s3-clients.sh", &install));
}

#[test]
fn boto3_awscli_and_rclone_work_and_bad_input_changes_nothing() {
    let root = workspace_root();
    install_clients();
    let s3 = start(CellSpec { volume_mib: 64, ..CellSpec::default() });
    let python = venv().join("bin/python");
    let tests = root.join("cli/tests/s3");
    // One at a time: bad_input compares the whole server's state before and after each case.
    for (program, script) in [
        (python.clone(), tests.join("boto3_suite.py")),
        (python.clone(), tests.join("bad_input.py")),
        (PathBuf::from("bash"), tests.join("cli_tools.sh")),
    ] {
        let out = run(&s3, &program, &[&script]);
        let name = script.file_name().and_then(|n| n.to_str()).unwrap_or("script").to_string();
        assert!(out.status.success(), "{}\n(cell in {})", shown(&name, &out), s3.cell.dir.path().display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.lines().any(|l| l.starts_with("ok ")), "{name} ran no check:\n{stdout}");
        assert!(!stdout.contains("FAIL"), "{name}:\n{stdout}");
        eprintln!("{name}: {}", stdout.lines().last().unwrap_or(""));
    }
    // A deleted key stops working (frontends trust a looked-up key for 10 s at most).
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "key", "delete", "--master", &s3.cell.masters.join(","), &s3.access_key])
        .output()
        .expect("run cellar admin key delete");
    assert!(out.status.success(), "{}", shown("cellar admin key delete", &out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let probe = "import boto3, os, botocore\nfrom botocore.config import Config\n\
        c = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], aws_access_key_id=os.environ['S3_ACCESS_KEY'], \
        aws_secret_access_key=os.environ['S3_SECRET_KEY'], region_name='us-east-1', \
        config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))\n\
        try:\n    c.list_buckets(); print('accepted')\nexcept botocore.exceptions.ClientError as e:\n    print(e.response['Error']['Code'])\n";
    loop {
        let out = Command::new(&python)
            .args(["-c", probe])
            .env("S3_ENDPOINT", &s3.endpoint)
            .env("S3_ACCESS_KEY", &s3.access_key)
            .env("S3_SECRET_KEY", &s3.secret_key)
            .output()
            .expect("run the probe");
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer == "InvalidAccessKeyId" {
            break;
        }
        assert_eq!(answer, "accepted", "{}", shown("probe", &out));
        assert!(std::time::Instant::now() < deadline, "a deleted key was still accepted after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Runs `cli/tests/s3/space.py ARGS` against the cell's S3 API; its output.
fn space(s3: &S3Cell, args: &[&str]) -> String {
    let script = workspace_root().join("cli/tests/s3/space.py");
    let out = run(
        s3,
        &venv().join("bin/python"),
        &[script.as_path()].iter().copied().chain(args.iter().map(Path::new)).collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", shown("space.py", &out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Bytes allocated on disk under `dir` (what `du` counts).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Files under `dir` with their allocated bytes.
fn largest_files(dir: &Path, out: &mut Vec<(u64, String)>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            largest_files(&e.path(), out);
        } else if e.path().to_string_lossy().contains("/disk-") {
            out.push((meta.blocks() * 512, e.path().display().to_string()));
        }
    }
}

/// Bytes allocated on the cell's disks per volume id, from the extent files' names
/// (`extents/v<16 hex digits>.r` or `.fNN`; trash not counted).
fn volumes_on_disks(cell: &Cell) -> std::collections::BTreeMap<u64, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for disk in std::fs::read_dir(cell.dir.path()).expect("cell dir").flatten() {
        if !disk.file_name().to_string_lossy().starts_with("disk-") {
            continue;
        }
        let Ok(files) = std::fs::read_dir(disk.path().join("extents")) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let id = name
                .strip_prefix('v')
                .and_then(|rest| rest.get(..16))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if let (Some(id), Ok(meta)) = (id, f.path().symlink_metadata()) {
                *out.entry(id).or_insert(0) += meta.blocks() * 512;
            }
        }
    }
    out
}

/// Every volume server disk of the cell, together.
fn disks_usage(cell: &Cell) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(cell.dir.path()).expect("cell dir").flatten() {
        if e.file_name().to_string_lossy().starts_with("disk-") {
            total += disk_usage(&e.path());
        }
    }
    total
}

/// What the 12 disks' catalogs may grow by while 1 GiB of objects come and go.
const CATALOG_GROWTH_BYTES: u64 = 1 << 20;

#[test]
fn deleted_objects_give_their_space_back() {
    install_clients();
    let spec = CellSpec {
        volume_mib: 16,
        master_config: "compaction_interval_ms = 1000\ncompaction_grace_ms = 3000\n".into(),
        volume_args: vec!["--trash-retention-secs".into(), "1".into()],
        ..CellSpec::default()
    };
    let s3 = start(spec);
    let empty = disks_usage(&s3.cell);
    let run_space = |args: &[&str]| space(&s3, args);
    let filled = run_space(&["fill", "space", "1024"]);
    let full = disks_usage(&s3.cell);
    eprintln!("{filled}: disks {empty} bytes empty, {full} bytes full");
    assert!(full > empty + (1 << 30), "1 GiB of objects took only {} MiB", (full - empty) >> 20);
    let emptied = run_space(&["empty", "space"]);
    // The cell's own readiness block goes too: the cell holds nothing then.
    let agent = common::agent(std::time::Duration::from_secs(30));
    let ready = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"ready"))
    };
    while agent.delete(&format!("{}/v1/blocks/{ready}", s3.cell.base)).call().is_ok() {}
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let now = disks_usage(&s3.cell);
        // Within 10% of the empty cell's usage, plus what the disks' catalogs (RocksDB's
        // write-ahead and info logs, ~25 KiB a disk here) grew by recording every extent
        // made and deleted: 1 MiB for the 12 disks.
        if now <= empty + empty / 10 + CATALOG_GROWTH_BYTES {
            eprintln!("{emptied}: disks back to {now} bytes (empty cell {empty} bytes)");
            break;
        }
        if std::time::Instant::now() >= deadline {
            let mut files = Vec::new();
            largest_files(s3.cell.dir.path(), &mut files);
            files.sort();
            panic!(
                "disks still hold {now} bytes, the empty cell {empty}; largest files {:?}; status: {:?}",
                files.iter().rev().take(12).collect::<Vec<_>>(),
                common::admin_status(&s3.cell.masters.join(",")).map(|s| (
                    s["compaction"].clone(),
                    s["volumes"].clone(),
                    s["tasks"].clone()
                ))
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let status = common::admin_status(&s3.cell.masters.join(",")).expect("status");
    assert!(status["compaction"]["volumes_reclaimed"].as_u64().unwrap_or(0) > 0, "{status}");
    // Compaction leaves live data alone: objects put now survive several passes, each
    // longer apart than the grace, and read back byte-exact.
    let kept = run_space(&["keep", "keep"]);
    let passes = |s: &serde_json::Value| s["compaction"]["passes"].as_u64().unwrap_or(0);
    let from = passes(&status);
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let now = common::admin_status(&s3.cell.masters.join(",")).expect("status");
        if passes(&now) >= from + 10 {
            assert_eq!(now["compaction"]["volumes_dead"].as_u64(), Some(0), "{now}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "compaction stopped passing: {now}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let intact = run_space(&["check", "keep"]);
    eprintln!("{kept}; {intact} after 10 more compaction passes");
}

#[test]
fn half_live_volumes_are_rewritten_and_reclaimed_and_lifecycle_rules_expire() {
    install_clients();
    let spec = CellSpec {
        volume_mib: 16,
        master_config:
            "compaction_interval_ms = 1000\ncompaction_grace_ms = 3000\ncompaction_live_fraction_min = 0.7\n\
             lifecycle_interval_ms = 500\nlifecycle_day_ms = 3000\n"
                .into(),
        volume_args: vec!["--trash-retention-secs".into(), "1".into()],
        ..CellSpec::default()
    };
    let s3 = start(spec);
    let run_space = |args: &[&str]| space(&s3, args);
    let masters = s3.cell.masters.join(",");
    let put = run_space(&["half", "half", "160"]);
    let full = disks_usage(&s3.cell);
    let volumes_before = volumes_on_disks(&s3.cell);
    // The sealed volumes, half live, are rewritten (their live blocks moved into open
    // volumes) and reclaimed: no candidate left, several volumes reclaimed, and their
    // extent files gone from every disk.
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        let s = common::admin_status(&masters).expect("status");
        let c = &s["compaction"];
        if c["passes"].as_u64().unwrap_or(0) > 3
            && c["rewrite_candidates"].as_u64() == Some(0)
            && c["volumes_reclaimed"].as_u64().unwrap_or(0) >= 4
        {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compaction did not rewrite the half-live volumes: {c}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let intact = run_space(&["checkhalf", "half", "160"]);
    // How much the disks hold in all after this depends on timing (the rewritten blocks
    // sit in open volumes, replicated three times, until those fill and are coded), so
    // what is checked is that the reclaimed volumes' files are gone.
    let reclaimed = status["compaction"]["volumes_reclaimed"].as_u64().unwrap_or(0) as usize;
    let deadline = std::time::Instant::now() + common::WAIT;
    let freed_bytes = loop {
        let now = volumes_on_disks(&s3.cell);
        let gone: Vec<u64> = volumes_before.keys().filter(|id| !now.contains_key(id)).copied().collect();
        if gone.len() >= reclaimed {
            break gone.iter().map(|id| volumes_before[id]).sum::<u64>();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{reclaimed} volumes reclaimed, but only volumes {gone:?} left the disks: before {volumes_before:?}, now {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(freed_bytes > 0, "the reclaimed volumes held nothing on the disks");
    let after = disks_usage(&s3.cell);
    eprintln!(
        "{put}; {intact}; {reclaimed} volumes' files gone ({freed_bytes} bytes); disks {full} -> {after} bytes; \
         compaction {}",
        status["compaction"]
    );
    // Bucket lifecycle rules (days of 3 s here): see the script.
    let script = workspace_root().join("cli/tests/s3/lifecycle.py");
    let out = run(&s3, &venv().join("bin/python"), &[script.as_path()]);
    assert!(out.status.success(), "{}", shown("lifecycle.py", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lifecycle: all checks passed"), "{stdout}");
    eprintln!("{stdout}");
}

/// Runs one step of `cli/tests/s3/copy_source.py`; its output (asserted to succeed).
fn copy_step(s3: &S3Cell, args: &[&str]) -> String {
    let script = workspace_root().join("cli/tests/s3/copy_source.py");
    let mut all = vec![script.into_os_string()];
    all.extend(args.iter().map(std::ffi::OsString::from));
    let out = run(s3, &venv().join("bin/python"), &all);
    let name = format!("copy_source.py {}", args.first().copied().unwrap_or(""));
    assert!(out.status.success(), "{}\n(cell in {})", shown(&name, &out), s3.cell.dir.path().display());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.lines().any(|l| l.starts_with("ok ")), "{name} ran no check:\n{stdout}");
    eprintln!("{name}:\n{stdout}");
    stdout
}

/// UploadPartCopy reads its source from the cell, not from the client: a source that
/// cannot be read (every volume server frozen) answers ServiceUnavailable naming the copy
/// source, within the bound the frontend gives a copy source's reads (it answered
/// IncompleteBody, a client's fault, or RequestTimeout "the body stopped arriving"), and
/// adds no part; once the servers run again, the same copy completes byte-exact.
#[test]
fn a_part_copy_whose_source_cannot_be_read_fails_as_the_servers_and_adds_no_part() {
    install_clients();
    let mut s3 = start(CellSpec { volume_mib: 64, ..CellSpec::default() });
    let bucket = "copy-source";
    let prepared = copy_step(&s3, &["prepare", bucket]);
    let upload = prepared
        .lines()
        .find_map(|l| l.strip_prefix("upload "))
        .unwrap_or_else(|| panic!("no upload id in {prepared}"))
        .trim()
        .to_string();
    let nodes: Vec<u64> = s3.cell.volumes.iter().map(|v| v.node_id).collect();
    for node in &nodes {
        s3.cell.freeze(*node);
    }
    copy_step(&s3, &["unreadable", bucket, &upload]);
    for node in &nodes {
        s3.cell.thaw(*node);
    }
    copy_step(&s3, &["readable", bucket, &upload]);
}

/// The value of the frontend counter `name` with `labels` (e.g. `outcome="used"`, or ""
/// for none) from its `/metrics`.
fn frontend_counter(cell: &Cell, name: &str, labels: &str) -> u64 {
    let text = ureq::get(&format!("{}/metrics", cell.base))
        .call()
        .expect("scrape the frontend")
        .into_string()
        .expect("metrics text");
    let series = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the frontend's metrics"))
}

/// GetObject of a one-block object (small, read whole; large, read as it arrives) reads
/// the block the frontend last saw it made of while it asks the masters for the version,
/// and uses it only if that version is made of exactly it: overwrites, deletes and delete
/// markers made through another frontend are answered as the masters hold them
/// (`cli/tests/s3/read_ahead.py`), and the first frontend counts guesses used and
/// discarded, none of them as a get abandoned or cut short.
#[test]
fn a_blocks_read_ahead_is_used_only_when_the_masters_version_names_it() {
    install_clients();
    let mut s3 = start(CellSpec::default());
    let port = cellar_bench::process::free_port().expect("port");
    let second_s3 = format!("127.0.0.1:{port}");
    s3.cell.start_frontend("frontend-2", &["--s3", &second_s3]);
    let script = workspace_root().join("cli/tests/s3/read_ahead.py");
    let mut command = Command::new(venv().join("bin/python"));
    command
        .arg(&script)
        .current_dir(workspace_root())
        .env("S3_ENDPOINT", &s3.endpoint)
        .env("S3_ENDPOINT_2", format!("http://{second_s3}"))
        .env("S3_ACCESS_KEY", &s3.access_key)
        .env("S3_SECRET_KEY", &s3.secret_key)
        .env("S3_REGION", "us-east-1");
    let out = command.output().expect("run read_ahead.py");
    assert!(
        out.status.success(),
        "{}\n(cell in {})",
        shown("read_ahead.py", &out),
        s3.cell.dir.path().display()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("ok ")), "read_ahead.py ran no check:\n{stdout}");
    eprintln!("read_ahead.py:\n{stdout}");
    let used = frontend_counter(&s3.cell, "cellar_frontend_s3_read_ahead_total", "outcome=\"used\"");
    let discarded =
        frontend_counter(&s3.cell, "cellar_frontend_s3_read_ahead_total", "outcome=\"discarded\"");
    let streamed = |outcome: &str| {
        frontend_counter(&s3.cell, "cellar_frontend_streamed_gets_total", &format!("outcome=\"{outcome}\""))
    };
    let (started, cut, abandoned) = (streamed("started"), streamed("cut"), streamed("abandoned"));
    let streamed_ahead = frontend_counter(&s3.cell, "cellar_frontend_s3_read_ahead_streamed_total", "");
    // Every GetObject of a latest version, whole, with a guess, counts once, used or
    // discarded: 19 in read_ahead.py. Discarded (9): of the small objects the overwrite, the
    // delete, the larger object, the 304, the version written through the other frontend,
    // the delete marker; of the large one the overwrite, the 304 and the delete. Used (10):
    // the rest (one may fail and be discarded instead: a read that failed is read again
    // the usual way).
    eprintln!(
        "read-aheads used {used} ({streamed_ahead} streamed), discarded {discarded}; streamed gets started \
         {started}, cut {cut}, abandoned {abandoned}"
    );
    assert_eq!(used + discarded, 19, "read-aheads used {used}, discarded {discarded}");
    assert!(used >= 9 && discarded >= 9, "read-aheads used {used}, discarded {discarded}");
    // The large object's own writes read back came from an open volume, handed on as they
    // arrived (as `frozen.rs` checks of the block API's gets).
    assert!(streamed_ahead >= 1, "no read-ahead was streamed");
    // A large guess dropped unused is not a get its client gave up on, nor one cut short.
    assert_eq!((cut, abandoned), (0, 0), "streamed gets cut short or abandoned");
}
