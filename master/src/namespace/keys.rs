//! The namespace's key layout (docs/FORMAT.md 13.5). Bucket names never hold a 0 byte and
//! object keys are refused with one, so a 0 byte ends each name and keys sort as S3 lists
//! them (byte order of the object key).

/// Prefix of bucket records: then the bucket name.
pub const PREFIX_BUCKET: u8 = b'B';
/// Prefix of version records: then bucket, 0, object key, 0, `!version` (big-endian), so
/// a key's versions sort newest first.
pub const PREFIX_VERSION: u8 = b'O';
/// Prefix of upload records: then bucket, 0, object key, 0, upload id.
pub const PREFIX_UPLOAD: u8 = b'U';
/// Prefix of part records: then bucket, 0, upload id, 0, part number (big-endian u32).
pub const PREFIX_PART: u8 = b'P';
/// Prefix of access key records: then the access key id.
pub const PREFIX_ACCESS_KEY: u8 = b'A';
/// Prefix of lifecycle records: then the bucket name.
pub const PREFIX_LIFECYCLE: u8 = b'L';

fn joined(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    key.push(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(p);
    }
    key
}

/// Key of a bucket record.
pub fn bucket(name: &str) -> Vec<u8> {
    joined(PREFIX_BUCKET, &[name.as_bytes()])
}

/// Key of a bucket's lifecycle record.
pub fn lifecycle(bucket: &str) -> Vec<u8> {
    joined(PREFIX_LIFECYCLE, &[bucket.as_bytes()])
}

/// The prefix of every version in `bucket`.
pub fn versions_of_bucket(bucket: &str) -> Vec<u8> {
    let mut k = joined(PREFIX_VERSION, &[bucket.as_bytes()]);
    k.push(0);
    k
}

/// The prefix of every version of `key` (`bucket`, 0, `key`, 0).
pub fn versions_of_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = joined(PREFIX_VERSION, &[bucket.as_bytes(), key.as_bytes()]);
    k.push(0);
    k
}

/// Key of version `version` of `key`.
pub fn version(bucket: &str, key: &str, version: u64) -> Vec<u8> {
    let mut k = versions_of_key(bucket, key);
    k.extend_from_slice(&(!version).to_be_bytes());
    k
}

/// The object key and version number of a version record's key under `bucket_prefix`
/// (from [`versions_of_bucket`]); `None` for a key of another shape.
pub fn split_version(bucket_prefix: &[u8], full: &[u8]) -> Option<(String, u64)> {
    let rest = full.strip_prefix(bucket_prefix)?;
    if rest.len() < 9 || rest[rest.len() - 9] != 0 {
        return None;
    }
    let (key, tail) = rest.split_at(rest.len() - 9);
    let inverted = u64::from_be_bytes(tail[1..].try_into().ok()?);
    Some((String::from_utf8(key.to_vec()).ok()?, !inverted))
}

/// The prefix of every upload in `bucket`.
pub fn uploads_of_bucket(bucket: &str) -> Vec<u8> {
    let mut k = joined(PREFIX_UPLOAD, &[bucket.as_bytes()]);
    k.push(0);
    k
}

/// Key of an upload record.
pub fn upload(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    joined(PREFIX_UPLOAD, &[bucket.as_bytes(), key.as_bytes(), upload_id.as_bytes()])
}

/// The object key and upload id of an upload record's key under `bucket_prefix`.
pub fn split_upload(bucket_prefix: &[u8], full: &[u8]) -> Option<(String, String)> {
    let rest = full.strip_prefix(bucket_prefix)?;
    let zero = rest.iter().rposition(|b| *b == 0)?;
    let key = String::from_utf8(rest[..zero].to_vec()).ok()?;
    let id = String::from_utf8(rest[zero + 1..].to_vec()).ok()?;
    Some((key, id))
}

/// The prefix of every part of an upload.
pub fn parts_of_upload(bucket: &str, upload_id: &str) -> Vec<u8> {
    let mut k = joined(PREFIX_PART, &[bucket.as_bytes(), upload_id.as_bytes()]);
    k.push(0);
    k
}

/// Key of a part record.
pub fn part(bucket: &str, upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut k = parts_of_upload(bucket, upload_id);
    k.extend_from_slice(&part_number.to_be_bytes());
    k
}

/// Key of an access key record.
pub fn access_key(access_key: &str) -> Vec<u8> {
    joined(PREFIX_ACCESS_KEY, &[access_key.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_key_then_newest_first() {
        let mut keys =
            [version("b", "a", 1), version("b", "a", 7), version("b", "ab", 3), version("b", "a/", 2)];
        keys.sort();
        let prefix = versions_of_bucket("b");
        let split: Vec<_> = keys.iter().map(|k| split_version(&prefix, k).expect("ok")).collect();
        assert_eq!(split, vec![("a".into(), 7), ("a".into(), 1), ("a/".into(), 2), ("ab".into(), 3)]);
    }

    #[test]
    fn uploads_split_back() {
        let prefix = uploads_of_bucket("b");
        assert_eq!(split_upload(&prefix, &upload("b", "x/y", "00ff")), Some(("x/y".into(), "00ff".into())));
    }
}
