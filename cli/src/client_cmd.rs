//! `cellar put|get|stat|rm`: the block API from the command line. The endpoint defaults
//! to `$CELLAR_ENDPOINT`, else the running `cellar dev` (its endpoints.json), else
//! http://127.0.0.1:7480.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The block API endpoint: the one given, `$CELLAR_ENDPOINT`, the running `cellar dev`,
/// or the default address.
pub fn endpoint(given: Option<String>) -> String {
    if let Some(e) = given.or_else(|| std::env::var("CELLAR_ENDPOINT").ok()) {
        return e.trim_end_matches('/').to_string();
    }
    let file = crate::dev_cmd::default_data_dir().join("endpoints.json");
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(http) = v["http"].as_str()
    {
        return http.trim_end_matches('/').to_string();
    }
    format!("http://{}", crate::dev_cmd::DEFAULT_HTTP)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().build()
}

fn explain(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            anyhow::anyhow!("HTTP {code}: {body}")
        }
        other => anyhow::anyhow!("{other} (is `cellar dev` running?)"),
    }
}

/// `cellar put [--endpoint URL] FILE|-`: prints the block's hash.
pub fn put(endpoint_arg: Option<String>, file: PathBuf) -> Result<()> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("read standard input")?;
    } else {
        bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
    }
    let url = format!("{}/v1/blocks", endpoint(endpoint_arg));
    let resp = agent().put(&url).send_bytes(&bytes).map_err(explain)?;
    let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).context("parse the answer")?;
    match v["hash"].as_str() {
        Some(h) => println!("{h}"),
        None => bail!("unexpected answer {v}"),
    }
    Ok(())
}

/// `cellar get [--endpoint URL] HASH [-o FILE]`.
pub fn get(endpoint_arg: Option<String>, hash: String, out: Option<PathBuf>) -> Result<()> {
    let url = format!("{}/v1/blocks/{hash}", endpoint(endpoint_arg));
    let resp = agent().get(&url).call().map_err(explain)?;
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).context("read the block")?;
    match out {
        Some(path) => std::fs::write(&path, &bytes).with_context(|| format!("write {}", path.display()))?,
        None => std::io::stdout().write_all(&bytes).context("write standard output")?,
    }
    Ok(())
}

/// `cellar stat [--endpoint URL] HASH`: volume, state and placement.
pub fn stat(endpoint_arg: Option<String>, hash: String) -> Result<()> {
    let url = format!("{}/v1/stat/{hash}", endpoint(endpoint_arg));
    let resp = agent().get(&url).call().map_err(explain)?;
    let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).context("parse the answer")?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `cellar rm [--endpoint URL] HASH`: drops one reference.
pub fn rm(endpoint_arg: Option<String>, hash: String) -> Result<()> {
    let url = format!("{}/v1/blocks/{hash}", endpoint(endpoint_arg));
    agent().delete(&url).call().map_err(explain)?;
    Ok(())
}
