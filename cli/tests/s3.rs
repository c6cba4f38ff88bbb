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

fn start() -> S3Cell {
    let port = cellar_bench::process::free_port().expect("port");
    let spec = CellSpec {
        volume_mib: 64,
        frontend_args: vec!["--s3".into(), format!("127.0.0.1:{port}")],
        ..CellSpec::default()
    };
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

fn run(s3: &S3Cell, program: &Path, args: &[&Path]) -> Output {
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

#[test]
fn boto3_awscli_and_rclone_work_and_bad_input_changes_nothing() {
    let root = workspace_root();
    let install =
        Command::new("bash").arg(root.join("scripts/s3-clients.sh")).output().expect("run s3-clients.sh");
    assert!(install.status.success(), "{}", shown("scripts/s3-clients.sh", &install));
    let s3 = start();
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
