//! SigV4 secrets for s3s: access keys live in the master (`cellar admin key create`);
//! a frontend keeps the ones it has looked up for [`KEY_CACHE_TTL`], so a deleted key
//! stops working within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellar_proto::master as pb;
use cellar_volume_api::cluster::Cluster;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

/// How long a looked-up key is trusted without asking the master again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// Keys cached at most (the cache is cleared when full).
pub const KEY_CACHE_MAX: usize = 10_000;

/// Looks access keys up in the master.
pub struct MasterKeys {
    cluster: Arc<Cluster>,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl MasterKeys {
    /// Keys from `master`.
    pub fn new(cluster: Arc<Cluster>) -> MasterKeys {
        MasterKeys { cluster, cache: Mutex::new(HashMap::new()) }
    }
}

#[async_trait::async_trait]
impl S3Auth for MasterKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some((secret, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(access_key)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(SecretKey::from(secret.clone()));
        }
        let name = access_key.to_string();
        let found = self
            .cluster
            .master()
            .call(|mut c| {
                let access_key = name.clone();
                async move { c.ns_get_access_key(pb::GetAccessKeyRequest { access_key }).await }
            })
            .await;
        match found {
            Ok(k) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= KEY_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(name, (k.secret_key.clone(), Instant::now()));
                Ok(SecretKey::from(k.secret_key))
            }
            Err(e) if e.code() == Some("NoSuchAccessKey") => {
                Err(s3_error!(InvalidAccessKeyId, "the access key does not exist"))
            }
            Err(e) => Err(s3_error!(ServiceUnavailable, "looking the access key up: {e}")),
        }
    }
}
