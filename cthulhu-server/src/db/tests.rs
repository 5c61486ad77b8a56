#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::fs;
use std::path::Path;
use std::thread;

use rusqlite::Connection;

use super::*;
use crate::store::STREAMS_FILE;

const T0: i64 = 1_700_000_000;

fn admin(db: &Db, name: &str) -> UserId {
    db.create_user(name, "$argon2id$v=19$hash", Role::Admin, false, T0)
        .unwrap()
}

fn audit_at<'a>(at: i64, action: &'a str) -> NewAudit<'a> {
    NewAudit {
        at,
        actor: "system",
        action,
        ..NewAudit::default()
    }
}

#[test]
fn open_migrates_once_and_reopen_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path()).unwrap();
    let latest = i64::try_from(migrations::MIGRATIONS.len()).unwrap();
    assert_eq!(db.schema_version().unwrap(), latest);
    assert_eq!(db.path(), tmp.path().join(DB_FILE));
    let id = admin(&db, "alice");
    db.create_stream("live/main", "k1", T0).unwrap();
    drop(db);

    let db = Db::open(tmp.path()).unwrap();
    assert_eq!(db.schema_version().unwrap(), latest);
    assert_eq!(db.user_by_id(id).unwrap().unwrap().username, "alice");
    assert_eq!(db.streams().unwrap().len(), 1);
    let journal: String = db
        .lock()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let fk: bool = db
        .lock()
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert!(fk);
}

#[test]
fn migrations_apply_in_order_and_a_failed_one_rolls_back() {
    let path = Path::new(IN_MEMORY);
    let mut conn = Connection::open_in_memory().unwrap();
    let version = |conn: &Connection| -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    migrations::migrate(&mut conn, &["CREATE TABLE a (x INTEGER);"], path).unwrap();
    assert_eq!(version(&conn), 1);
    // A later release adds migrations: only the new ones run.
    let v3 = [
        "CREATE TABLE a (x INTEGER);",
        "ALTER TABLE a ADD COLUMN y INTEGER;",
        "CREATE TABLE b (x INTEGER);",
    ];
    migrations::migrate(&mut conn, &v3, path).unwrap();
    assert_eq!(version(&conn), 3);
    migrations::migrate(&mut conn, &v3, path).unwrap();
    assert_eq!(version(&conn), 3);

    let mut broken = v3.to_vec();
    broken.push("CREATE TABLE c (x INTEGER); SELECT * FROM missing;");
    let err = migrations::migrate(&mut conn, &broken, path).unwrap_err();
    assert!(
        matches!(err, DbError::Migration { version: 4, .. }),
        "{err:?}"
    );
    assert_eq!(version(&conn), 3);
    let c_exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'c')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!c_exists, "the failed migration was rolled back");
}

#[test]
fn newer_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Db::open(tmp.path()).unwrap());
    let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = Db::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, DbError::TooNew { found: 999, supported, .. }
            if supported == migrations::MIGRATIONS.len() as i64),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("schema version 999"), "{shown}");
    assert!(
        shown.contains(&format!(
            "newer than this server supports ({})",
            migrations::MIGRATIONS.len()
        )),
        "{shown}"
    );

    let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", -1).unwrap();
    drop(conn);
    let err = Db::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, DbError::BadVersion { found: -1, .. }),
        "{err:?}"
    );
}

#[test]
fn missing_data_dir_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Db::open(&tmp.path().join("missing")).unwrap_err();
    assert!(matches!(err, DbError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot create the database file"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path()).unwrap();
    admin(&db, "alice");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join(DB_FILE)), 0o600);
    let wal = tmp.path().join(format!("{DB_FILE}-wal"));
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600);
}

#[test]
fn usernames_are_unique_regardless_of_case() {
    let db = Db::open_in_memory().unwrap();
    let id = admin(&db, "Alice");
    let err = db
        .create_user("aLICE", "$argon2id$other", Role::Admin, false, T0)
        .unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
    assert!(!err.to_string().contains("argon2"), "{err}");
    let found = db.user_by_name("ALICE").unwrap().unwrap();
    assert_eq!(found.id, id);
    assert_eq!(found.username, "Alice");
    assert_eq!(found.role, Role::Admin);
    assert!(!found.totp_enabled && !found.disabled && !found.must_change_password);
    assert_eq!(db.user_count().unwrap(), 1);
    assert!(db.user_by_name("bob").unwrap().is_none());
}

#[test]
fn user_debug_hides_secrets() {
    let db = Db::open_in_memory().unwrap();
    let id = admin(&db, "alice");
    assert!(db.set_totp_pending(id, b"SUPERSECRETTOTP", T0).unwrap());
    let user = db.user_by_id(id).unwrap().unwrap();
    assert_eq!(user.totp_secret.as_deref(), Some(&b"SUPERSECRETTOTP"[..]));
    let shown = format!("{user:?}");
    assert!(!shown.contains("argon2"), "{shown}");
    assert!(!shown.contains("83, 85, 80"), "{shown}");
    assert!(shown.contains("alice"), "{shown}");
}

#[test]
fn last_admin_cannot_be_deleted_or_disabled() {
    let db = Db::open_in_memory().unwrap();
    let a = admin(&db, "alice");
    let err = db.delete_user(a).unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
    let err = db.set_user_disabled(a, true, T0).unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");

    let b = admin(&db, "bob");
    assert!(db.set_user_disabled(b, true, T0).unwrap());
    // Bob is disabled: Alice is still the last usable administrator.
    assert!(matches!(db.delete_user(a), Err(DbError::Conflict(_))));
    assert!(db.set_user_disabled(b, false, T0 + 1).unwrap());
    assert!(db.delete_user(a).unwrap());
    assert!(db.user_by_id(a).unwrap().is_none());
    assert!(!db.delete_user(a).unwrap());
    assert!(matches!(db.delete_user(b), Err(DbError::Conflict(_))));
    assert_eq!(
        db.list_users()
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect::<Vec<_>>(),
        [b]
    );
}

#[test]
fn deleting_a_user_deletes_sessions_and_tokens() {
    let db = Db::open_in_memory().unwrap();
    let _keep = admin(&db, "alice");
    let b = admin(&db, "bob");
    db.create_session(b"s", b, "csrf", T0, T0 + 100, None)
        .unwrap();
    db.create_token("ci", b"h", Some(b), T0).unwrap();
    assert!(db.delete_user(b).unwrap());
    assert!(db.session(b"s", T0).unwrap().is_none());
    assert!(db.list_tokens().unwrap().is_empty());
}

#[test]
fn password_and_totp_lifecycle() {
    let db = Db::open_in_memory().unwrap();
    let id = admin(&db, "alice");
    assert!(db.set_password(id, "$argon2id$new", true, T0 + 5).unwrap());
    let u = db.user_by_id(id).unwrap().unwrap();
    assert_eq!(u.password_hash, "$argon2id$new");
    assert!(u.must_change_password);
    assert_eq!((u.created_at, u.updated_at), (T0, T0 + 5));
    assert!(!db.set_password(UserId(999), "x", false, T0).unwrap());

    // No secret yet: nothing to enable, no step accepted.
    assert!(!db.enable_totp(id, T0).unwrap());
    assert!(!db.accept_totp_step(id, 1).unwrap());

    assert!(db.set_totp_pending(id, b"secret1", T0).unwrap());
    assert!(db.set_totp_pending(id, b"secret2", T0).unwrap());
    assert!(db.enable_totp(id, T0).unwrap());
    // Enabled: a new enrolment needs a reset first.
    assert!(!db.set_totp_pending(id, b"secret3", T0).unwrap());
    let u = db.user_by_id(id).unwrap().unwrap();
    assert!(u.totp_enabled);
    assert_eq!(u.totp_secret.as_deref(), Some(&b"secret2"[..]));

    assert!(db.accept_totp_step(id, 100).unwrap());
    assert!(!db.accept_totp_step(id, 100).unwrap(), "replay");
    assert!(!db.accept_totp_step(id, 99).unwrap(), "older code");
    assert!(db.accept_totp_step(id, 101).unwrap());
    assert_eq!(
        db.user_by_id(id).unwrap().unwrap().totp_last_step,
        Some(101)
    );

    assert!(db.reset_totp(id, T0).unwrap());
    let u = db.user_by_id(id).unwrap().unwrap();
    assert!(!u.totp_enabled);
    assert_eq!((u.totp_secret, u.totp_last_step), (None, None));
    assert!(!db.accept_totp_step(id, 102).unwrap());
}

#[test]
fn own_password_change_keeps_only_the_current_session() {
    let db = Db::open_in_memory().unwrap();
    let a = admin(&db, "alice");
    let b = admin(&db, "bob");
    assert!(db.set_password(a, "$argon2id$seen", true, T0).unwrap());
    for (id_hash, user) in [(&b"mine"[..], a), (b"other", a), (b"bob", b)] {
        db.create_session(id_hash, user, "c", T0, T0 + 100, None)
            .unwrap();
    }

    // The hash the caller verified against is no longer there: nothing changes.
    let stale = db
        .change_own_password(a, "$argon2id$older", "$argon2id$mine", b"mine", T0 + 1)
        .unwrap();
    assert_eq!(stale, None);
    assert!(db.user_by_id(a).unwrap().unwrap().must_change_password);
    assert!(db.session(b"other", T0 + 1).unwrap().is_some());

    let revoked = db
        .change_own_password(a, "$argon2id$seen", "$argon2id$mine", b"mine", T0 + 2)
        .unwrap();
    assert_eq!(revoked, Some(1));
    let u = db.user_by_id(a).unwrap().unwrap();
    assert_eq!(u.password_hash, "$argon2id$mine");
    assert!(!u.must_change_password);
    assert_eq!(u.updated_at, T0 + 2);
    assert!(db.session(b"mine", T0 + 2).unwrap().is_some(), "kept");
    assert!(db.session(b"other", T0 + 2).unwrap().is_none(), "revoked");
    assert!(
        db.session(b"bob", T0 + 2).unwrap().is_some(),
        "another user's"
    );
    assert_eq!(
        db.change_own_password(UserId(999), "x", "y", b"mine", T0)
            .unwrap(),
        None
    );
}

#[test]
fn only_live_sessions_are_returned() {
    let db = Db::open_in_memory().unwrap();
    let a = admin(&db, "alice");
    let b = admin(&db, "bob");
    db.create_session(b"live", a, "csrf-live", T0, T0 + 100, Some("192.0.2.1"))
        .unwrap();
    db.create_session(b"revoked", a, "c", T0, T0 + 100, None)
        .unwrap();
    db.create_session(b"bob", b, "c", T0, T0 + 100, None)
        .unwrap();
    assert!(matches!(
        db.create_session(b"live", a, "c", T0, T0 + 100, None),
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.create_session(b"nouser", UserId(999), "c", T0, T0 + 100, None),
        Err(DbError::NotFound(_))
    ));

    let s = db.session(b"live", T0 + 99).unwrap().unwrap();
    assert_eq!(s.user_id, a);
    assert!(s.csrf_token.matches("csrf-live"));
    assert_eq!(s.remote.as_deref(), Some("192.0.2.1"));
    assert!(!format!("{s:?}").contains("csrf-live"));
    assert!(db.session(b"live", T0 + 100).unwrap().is_none(), "expired");
    assert!(db.session(b"unknown", T0).unwrap().is_none());

    assert!(db.touch_session(b"live", T0 + 50).unwrap());
    assert_eq!(
        db.session(b"live", T0 + 60).unwrap().unwrap().last_seen_at,
        T0 + 50
    );

    assert!(db.revoke_session(b"revoked").unwrap());
    assert!(db.session(b"revoked", T0).unwrap().is_none());
    assert!(!db.revoke_session(b"unknown").unwrap());

    // A disabled user's sessions stop working.
    db.set_user_disabled(b, true, T0).unwrap();
    assert!(db.session(b"bob", T0).unwrap().is_none());
    db.set_user_disabled(b, false, T0).unwrap();
    assert!(db.session(b"bob", T0).unwrap().is_some());

    db.create_session(b"live2", a, "c", T0, T0 + 1000, None)
        .unwrap();
    assert_eq!(db.revoke_user_sessions(a).unwrap(), 2);
    assert!(db.session(b"live2", T0).unwrap().is_none());
    assert!(db.session(b"bob", T0).unwrap().is_some());

    // Purging at T0 + 100: the three revoked ones and nothing else.
    assert_eq!(db.purge_expired(T0 + 99).unwrap(), 3);
    assert_eq!(db.purge_expired(T0 + 100).unwrap(), 1);
    assert!(db.session(b"bob", T0).unwrap().is_none());
}

#[test]
fn revoked_tokens_are_not_returned() {
    let db = Db::open_in_memory().unwrap();
    let a = admin(&db, "alice");
    let ci = db.create_token("ci", b"hash-ci", Some(a), T0).unwrap();
    let bot = db.create_token("bot", b"hash-bot", None, T0).unwrap();
    assert!(matches!(
        db.create_token("ci", b"other", None, T0),
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.create_token("new", b"hash-ci", None, T0),
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.create_token("ghost", b"g", Some(UserId(999)), T0),
        Err(DbError::NotFound(_))
    ));

    let t = db.token_by_hash(b"hash-ci").unwrap().unwrap();
    assert_eq!((t.id, t.name.as_str(), t.user_id), (ci, "ci", Some(a)));
    assert_eq!(t.last_used_at, None);
    assert!(db.touch_token(ci, T0 + 7).unwrap());
    assert_eq!(
        db.token_by_hash(b"hash-ci").unwrap().unwrap().last_used_at,
        Some(T0 + 7)
    );

    assert!(db.revoke_token(bot).unwrap());
    assert!(db.token_by_hash(b"hash-bot").unwrap().is_none());
    assert!(!db.revoke_token(TokenId(999)).unwrap());
    let listed = db.list_tokens().unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.name.as_str(), t.revoked))
            .collect::<Vec<_>>(),
        [("ci", false), ("bot", true)]
    );
}

#[test]
fn streams_crud_and_cascade() {
    let db = Db::open_in_memory().unwrap();
    db.create_stream("live/b", "key-b", T0).unwrap();
    db.create_stream("live/a", "key-a", T0).unwrap();
    let err = db.create_stream("live/a", "other", T0).unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
    assert!(!err.to_string().contains("other"));

    let s = db.stream("live/a").unwrap().unwrap();
    assert_eq!(s.key.expose(), "key-a");
    assert!(s.play_key.is_none() && s.passphrase.is_none());
    assert!(!format!("{s:?}").contains("key-a"));
    assert!(db.set_stream_key("live/a", "key-a2").unwrap());
    assert!(db.set_stream_play_key("live/a", Some("play")).unwrap());
    assert!(
        db.set_stream_passphrase("live/a", Some("0123456789"))
            .unwrap()
    );
    let s = db.stream("live/a").unwrap().unwrap();
    assert_eq!(s.key.expose(), "key-a2");
    assert_eq!(s.play_key.unwrap().expose(), "play");
    assert_eq!(s.passphrase.unwrap().expose(), "0123456789");
    assert!(!db.set_stream_key("live/none", "k").unwrap());
    assert_eq!(
        db.streams()
            .unwrap()
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>(),
        ["live/a", "live/b"]
    );

    db.create_destination("live/a", "yt", "rtmp://x/y/k", true, T0)
        .unwrap();
    db.create_destination("live/b", "yt", "rtmp://x/y/k", true, T0)
        .unwrap();
    db.create_recording(&StoredRecording {
        id: "r1".to_owned(),
        stream_path: "live/a".to_owned(),
        storage: None,
        format: None,
        segment_seconds: None,
        created_at: T0,
        enabled: true,
    })
    .unwrap();
    db.set_override("destination", "live/a", "toml-dest", false, T0)
        .unwrap();

    // Deleting a path the table lacks deletes nothing, not even destinations there.
    db.create_destination("live/toml", "yt", "rtmp://x/y/k", true, T0)
        .unwrap();
    assert!(!db.delete_stream("live/toml").unwrap());
    assert_eq!(db.destinations_of("live/toml").unwrap().len(), 1);

    assert!(db.delete_stream("live/a").unwrap());
    assert!(db.stream("live/a").unwrap().is_none());
    assert!(db.destinations_of("live/a").unwrap().is_empty());
    assert!(db.recordings_of("live/a").unwrap().is_empty());
    assert_eq!(db.destinations_of("live/b").unwrap().len(), 1);
    assert_eq!(db.overrides().unwrap().len(), 1);
}

#[test]
fn destination_crud_and_update_semantics() {
    let db = Db::open_in_memory().unwrap();
    let id = db
        .create_destination("live/main", "yt", "rtmp://a/app/KEY1", true, T0)
        .unwrap();
    db.create_destination("live/main", "twitch", "rtmp://b/app/KEY2", false, T0)
        .unwrap();
    db.create_destination("live/other", "yt", "rtmp://a/app/KEY3", true, T0)
        .unwrap();
    let err = db
        .create_destination("live/main", "yt", "rtmp://c/app/KEY4", true, T0)
        .unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
    assert!(!err.to_string().contains("KEY4"), "{err}");

    let all = db.destinations().unwrap();
    assert_eq!(
        all.iter()
            .map(|d| (d.stream_path.as_str(), d.name.as_str()))
            .collect::<Vec<_>>(),
        [
            ("live/main", "twitch"),
            ("live/main", "yt"),
            ("live/other", "yt")
        ]
    );
    let yt = &db.destinations_of("live/main").unwrap()[1];
    assert_eq!(yt.id, id);
    assert_eq!(yt.url.expose(), "rtmp://a/app/KEY1");
    assert!(yt.enabled);
    assert!(!format!("{yt:?}").contains("KEY1"));

    // Only the enabled flag.
    assert!(
        db.update_destination("live/main", "yt", None, Some(false), T0 + 1)
            .unwrap()
    );
    let yt = db.destinations_of("live/main").unwrap().remove(1);
    assert_eq!(
        (yt.url.expose(), yt.enabled, yt.created_at, yt.updated_at),
        ("rtmp://a/app/KEY1", false, T0, T0 + 1)
    );
    // Only the URL.
    assert!(
        db.update_destination("live/main", "yt", Some("rtmp://a/app/KEY5"), None, T0 + 2)
            .unwrap()
    );
    let yt = db.destinations_of("live/main").unwrap().remove(1);
    assert_eq!(
        (yt.url.expose(), yt.enabled, yt.updated_at),
        ("rtmp://a/app/KEY5", false, T0 + 2)
    );
    // Both, then neither (touches the update time only).
    assert!(
        db.update_destination(
            "live/main",
            "yt",
            Some("rtmp://a/app/K6"),
            Some(true),
            T0 + 3
        )
        .unwrap()
    );
    assert!(
        db.update_destination("live/main", "yt", None, None, T0 + 4)
            .unwrap()
    );
    let yt = db.destinations_of("live/main").unwrap().remove(1);
    assert_eq!(
        (yt.url.expose(), yt.enabled, yt.updated_at),
        ("rtmp://a/app/K6", true, T0 + 4)
    );
    // The other stream's destination of the same name is untouched.
    assert_eq!(
        db.destinations_of("live/other").unwrap()[0].url.expose(),
        "rtmp://a/app/KEY3"
    );
    assert!(
        !db.update_destination("live/main", "missing", None, Some(true), T0)
            .unwrap()
    );

    assert!(db.delete_destination("live/main", "yt").unwrap());
    assert!(!db.delete_destination("live/main", "yt").unwrap());
    assert_eq!(db.destinations().unwrap().len(), 2);
}

#[test]
fn recordings_and_overrides() {
    let db = Db::open_in_memory().unwrap();
    let rule = StoredRecording {
        id: "abc123".to_owned(),
        stream_path: "live/main".to_owned(),
        storage: Some("s3".to_owned()),
        format: Some("mp4".to_owned()),
        segment_seconds: Some(600),
        created_at: T0,
        enabled: true,
    };
    db.create_recording(&rule).unwrap();
    assert!(matches!(
        db.create_recording(&rule),
        Err(DbError::Conflict(_))
    ));
    let bad = StoredRecording {
        id: "bad".to_owned(),
        segment_seconds: Some(0),
        ..rule.clone()
    };
    assert!(matches!(db.create_recording(&bad), Err(DbError::Sqlite(_))));
    assert_eq!(db.recordings().unwrap(), std::slice::from_ref(&rule));
    assert_eq!(db.recordings_of("live/main").unwrap(), [rule]);
    assert!(db.recordings_of("live/x").unwrap().is_empty());
    assert!(db.delete_recording("abc123").unwrap());
    assert!(!db.delete_recording("abc123").unwrap());

    db.set_override("destination", "live/main", "yt", false, T0)
        .unwrap();
    db.set_override("destination", "live/main", "yt", true, T0 + 1)
        .unwrap();
    db.set_override("recording", "live/main", "0", false, T0)
        .unwrap();
    let o = db.overrides().unwrap();
    assert_eq!(o.len(), 2);
    assert_eq!(
        o[0],
        Override {
            kind: "destination".to_owned(),
            stream_path: "live/main".to_owned(),
            name: "yt".to_owned(),
            enabled: true,
            updated_at: T0 + 1,
        }
    );
    assert!(db.clear_override("destination", "live/main", "yt").unwrap());
    assert!(!db.clear_override("destination", "live/main", "yt").unwrap());
    assert_eq!(db.overrides().unwrap().len(), 1);
}

#[test]
fn recordings_are_enabled_and_disabled_in_place() {
    let db = Db::open_in_memory().unwrap();
    let rule = |id: &str, enabled| StoredRecording {
        id: id.to_owned(),
        stream_path: "live/main".to_owned(),
        storage: None,
        format: Some("ts".to_owned()),
        segment_seconds: None,
        created_at: T0,
        enabled,
    };
    db.create_recording(&rule("r1", true)).unwrap();
    db.create_recording(&rule("r2", false)).unwrap();
    assert!(db.set_recording_enabled("live/main", "r1", false).unwrap());
    assert!(db.set_recording_enabled("live/main", "r2", true).unwrap());
    assert_eq!(
        db.recordings().unwrap(),
        [rule("r1", false), rule("r2", true)]
    );
    // Another stream's id, or none: nothing changes.
    assert!(!db.set_recording_enabled("live/other", "r1", true).unwrap());
    assert!(!db.set_recording_enabled("live/main", "r3", true).unwrap());
    assert!(!db.recordings_of("live/main").unwrap()[0].enabled);
    // Not a boolean: refused by the schema.
    let bad = db
        .lock()
        .execute("UPDATE recordings SET enabled = 2 WHERE id = 'r1'", []);
    assert!(bad.is_err(), "{bad:?}");
}

#[test]
fn recordings_from_before_the_enabled_column_are_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
    migrations::migrate(
        &mut conn,
        &migrations::MIGRATIONS[..2],
        Path::new(IN_MEMORY),
    )
    .unwrap();
    conn.execute(
        "INSERT INTO recordings (id, stream_path, created_at) VALUES ('old', 'live/a', ?1)",
        [T0],
    )
    .unwrap();
    drop(conn);
    let db = Db::open(tmp.path()).unwrap();
    let [old] = db.recordings().unwrap().try_into().unwrap();
    assert_eq!(old.id, "old");
    assert!(old.enabled);
}

#[test]
fn segments_newest_first_by_stream_in_pages() {
    let db = Db::open_in_memory().unwrap();
    let seg = |path: &str, n: i64| Segment {
        id: 0,
        stream_path: path.to_owned(),
        recording: "r1".to_owned(),
        object: format!("{path}/{n}.mp4"),
        bytes: 1000 + n,
        duration_ms: 2000,
        finished_at: T0 + n,
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(db.add_segment(&seg("live/a", n)).unwrap());
        db.add_segment(&seg("live/b", n)).unwrap();
    }
    let all = db.segments(None, None, 100).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let a = db.segments(Some("live/a"), None, 2).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].object, "live/a/4.mp4");
    assert_eq!(a[0].id, ids[4]);
    assert_eq!(a[0].bytes, 1004);
    let older = db.segments(Some("live/a"), Some(a[1].id), 100).unwrap();
    assert_eq!(
        older.iter().map(|s| s.object.as_str()).collect::<Vec<_>>(),
        ["live/a/2.mp4", "live/a/1.mp4", "live/a/0.mp4"]
    );
    assert!(db.segments(Some("live/x"), None, 10).unwrap().is_empty());
}

#[test]
fn legacy_streams_import_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path()).unwrap();
    assert_eq!(db.import_legacy_streams_toml(tmp.path(), T0).unwrap(), None);

    db.create_stream("live/main", "db-key", T0).unwrap();
    let legacy = tmp.path().join(STREAMS_FILE);
    fs::write(
        &legacy,
        "# Streams created by cthulhu-server.\n\n[[streams]]\npath = \"live/main\"\n\
         key = \"file-key\"\n\n[[streams]]\npath = \"live/other\"\nkey = \"other-key\"\n",
    )
    .unwrap();
    assert_eq!(
        db.import_legacy_streams_toml(tmp.path(), T0 + 1).unwrap(),
        Some(1)
    );
    assert!(!legacy.exists());
    let imported = tmp.path().join(streams::IMPORTED_STREAMS_FILE);
    assert!(imported.exists());
    // The existing row keeps its key; the new one is inserted.
    assert_eq!(
        db.stream("live/main").unwrap().unwrap().key.expose(),
        "db-key"
    );
    let other = db.stream("live/other").unwrap().unwrap();
    assert_eq!(
        (other.key.expose(), other.created_at),
        ("other-key", T0 + 1)
    );

    // Again: no file, nothing to do.
    assert_eq!(db.import_legacy_streams_toml(tmp.path(), T0).unwrap(), None);
    // A crash before the rename: the file comes back, nothing is inserted twice.
    fs::copy(&imported, &legacy).unwrap();
    assert_eq!(
        db.import_legacy_streams_toml(tmp.path(), T0).unwrap(),
        Some(0)
    );
    assert!(!legacy.exists());
    assert_eq!(db.streams().unwrap().len(), 2);
}

#[test]
fn corrupt_legacy_file_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path()).unwrap();
    let legacy = tmp.path().join(STREAMS_FILE);
    let cases = [
        ("[[streams]\ngarbage", 1),
        ("[[streams]]\npath = \"main\"\nkey = \"HIDDENK1\"\n", 2),
        ("[[streams]]\npath = \"live/a\"\nkey = \"\"\n", 3),
        ("[[streams]]\npath = \"live/a\"\nkey = 123456\n", 3),
        (
            "[[streams]]\npath = \"live/a\"\nkey = \"HIDDENK1\"\n\
             [[streams]]\npath = \"live/a\"\nkey = \"HIDDENK2\"\n",
            5,
        ),
    ];
    for (text, want_line) in cases {
        fs::write(&legacy, text).unwrap();
        let err = db.import_legacy_streams_toml(tmp.path(), T0).unwrap_err();
        let DbError::LegacyCorrupt { line, .. } = &err else {
            panic!("{text:?}: {err:?}");
        };
        assert_eq!(*line, want_line, "{text:?}: {err}");
        let shown = err.to_string();
        assert!(
            !shown.contains("123456") && !shown.contains("HIDDEN"),
            "{shown}"
        );
        assert_eq!(fs::read_to_string(&legacy).unwrap(), text);
    }
    assert!(db.streams().unwrap().is_empty());
}

#[test]
fn audit_ordering_and_paging() {
    let db = Db::open_in_memory().unwrap();
    let detail = serde_json::json!({"destination": "yt", "enabled": true});
    let first = db
        .audit(&NewAudit {
            at: T0,
            actor: "alice",
            action: "destination.create",
            target: Some("live/main"),
            detail: Some(&detail),
            remote: Some("192.0.2.1"),
        })
        .unwrap();
    let mut ids = vec![first];
    for i in 1..10 {
        ids.push(db.audit(&audit_at(T0 + i, "login.ok")).unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let page1 = db.audit_log(4, None).unwrap();
    assert_eq!(
        page1.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[9], ids[8], ids[7], ids[6]]
    );
    let page2 = db.audit_log(4, Some(page1[3].id)).unwrap();
    assert_eq!(
        page2.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[5], ids[4], ids[3], ids[2]]
    );
    let page3 = db.audit_log(4, Some(page2[3].id)).unwrap();
    assert_eq!(page3.len(), 2);
    assert!(db.audit_log(4, Some(ids[0])).unwrap().is_empty());
    assert_eq!(
        page3[1],
        AuditEntry {
            id: first,
            at: T0,
            actor: "alice".to_owned(),
            action: "destination.create".to_owned(),
            target: Some("live/main".to_owned()),
            detail: Some(detail),
            remote: Some("192.0.2.1".to_owned()),
        }
    );
    assert_eq!(page3[0].detail, None);
    assert!(db.audit_log(0, None).unwrap().is_empty());
}

#[test]
fn clones_work_from_several_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("d{t}-{i}");
                    db.create_destination("live/main", &name, "rtmp://x/y/k", true, T0)
                        .unwrap();
                    db.audit(&audit_at(T0, "destination.create")).unwrap();
                    assert!(db.destinations_of("live/main").unwrap().len() > i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(db.destinations().unwrap().len(), 100);
    assert_eq!(db.audit_log(1000, None).unwrap().len(), 100);
}

#[test]
fn poisoned_lock_is_recovered() {
    let db = Db::open_in_memory().unwrap();
    let clone = db.clone();
    let panicked = thread::spawn(move || {
        let _guard = clone.lock();
        panic!("holder panics");
    })
    .join();
    assert!(panicked.is_err());
    assert!(db.conn.is_poisoned());
    admin(&db, "alice");
    assert_eq!(db.user_count().unwrap(), 1);
}

#[tokio::test]
async fn run_on_a_blocking_thread() {
    let db = Db::open_in_memory().unwrap();
    let id = db
        .run(|db| db.create_user("alice", "h", Role::Admin, true, T0))
        .await
        .unwrap();
    let user = db.run(move |db| db.user_by_id(id)).await.unwrap().unwrap();
    assert_eq!(user.username, "alice");
    assert!(user.must_change_password);
    let err = db
        .run(|db| db.create_user("ALICE", "h", Role::Admin, false, T0))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
}
