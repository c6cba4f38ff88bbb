//! openraft's own storage test suite, run against cellar's RocksDB log store and state
//! machine.

use cellar_master::TypeConfig;
use cellar_master::store::log::LogStore;
use cellar_master::store::open_db;
use cellar_master::store::sm::StateMachineStore;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let err = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let dir = tempfile::tempdir().map_err(err)?;
        let db = open_db(dir.path()).map_err(err)?;
        let log = LogStore::new(db.clone()).map_err(err)?;
        let sm = StateMachineStore::open(db, dir.path().join("snapshots")).map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_the_rocksdb_store() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await?;
    Ok(())
}
