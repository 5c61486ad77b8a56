//! Tests of config parsing and validation.

use super::*;

/// The only variables the tests' environment knows.
fn env(name: &str) -> Option<String> {
    match name {
        "CTHULHU_TEST_BACKUP_KEY" => Some("backup-secret".to_owned()),
        "CTHULHU_TEST_STUDIO_KEY" => Some("studio-secret".to_owned()),
        "CTHULHU_TEST_EMPTY" => Some(String::new()),
        "CTHULHU_TEST_SPACE" => Some("two words".to_owned()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_env(text, "cthulhu.toml", &env)
}

/// Asserts that `text` fails with exactly `want`, and that no secret of the test
/// files leaks into the message.
#[track_caller]
fn assert_error(text: &str, want: &str) {
    let got = match parse(text) {
        Ok(config) => panic!("expected error {want:?}, parsed {config:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(got, want);
    for secret in [
        "studio-secret",
        "backup-secret",
        "yt-key-1234",
        "FB-key-5678",
        "12345",
    ] {
        assert!(!got.contains(secret), "{secret} leaked: {got}");
    }
}

const FULL: &str = r#"# A complete config.
[server]
data_dir = "/var/lib/cthulhu"
log = "info,cthulhu_rtmp=debug"

[rtmp]
listen = "127.0.0.1:1935"
chunk_size = 8192
handshake_timeout_secs = 5
idle_timeout_secs = 20
play_stall_timeout_secs = 15

[hub]
gop_cache_bytes = 8388608
subscriber_queue_frames = 512
subscriber_queue_bytes = 16777216
on_overflow = "disconnect"
publisher_grace_secs = 0

[[streams]]
path = "live/studio"
key = "studio-secret"
play_key = "viewer-pass"

[[streams.push]]
name = "youtube"
url = "rtmp://a.rtmp.youtube.com/live2/yt-key-1234"

[[streams.push]]
name = "facebook"
url = "rtmps://live-api-s.facebook.com:443/rtmp/FB-key-5678?s_bl=1"
enabled = false
tls_ca_file = "/etc/cthulhu/fb-ca.pem"

[[streams]]
path = "live/backup"
key_env = "CTHULHU_TEST_BACKUP_KEY"
"#;

/// One stream with one destination; tests append or substitute lines.
const STREAM: &str = r#"[[streams]]
path = "live/studio"
key = "studio-secret"
"#;

#[test]
fn full_file() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/cthulhu"));
    assert_eq!(c.server.log.as_deref(), Some("info,cthulhu_rtmp=debug"));
    assert_eq!(
        c.rtmp.listen,
        "127.0.0.1:1935".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.rtmp.chunk_size, 8192);
    assert_eq!(c.rtmp.handshake_timeout, Duration::from_secs(5));
    assert_eq!(c.rtmp.idle_timeout, Duration::from_secs(20));
    assert_eq!(c.rtmp.play_stall_timeout, Duration::from_secs(15));
    assert_eq!(c.hub.gop_cache_bytes, 8 << 20);
    assert_eq!(c.hub.subscriber_queue_frames, 512);
    assert_eq!(c.hub.subscriber_queue_bytes, 16 << 20);
    assert_eq!(c.hub.on_overflow, OnOverflow::Disconnect);
    assert_eq!(c.hub.publisher_grace, Duration::ZERO);

    assert_eq!(c.streams.len(), 2);
    let studio = &c.streams[0];
    assert_eq!(studio.path.as_str(), "live/studio");
    assert_eq!(studio.key.expose(), "studio-secret");
    assert_eq!(
        studio.play_key.as_ref().map(Secret::expose),
        Some("viewer-pass")
    );
    assert_eq!(studio.push.len(), 2);
    let yt = &studio.push[0];
    assert_eq!(yt.name, "youtube");
    assert!(yt.enabled);
    assert!(!yt.url.rtmp().unwrap().tls);
    assert_eq!(yt.url.rtmp().unwrap().host, "a.rtmp.youtube.com");
    assert_eq!(yt.url.rtmp().unwrap().port, 1935);
    assert_eq!(yt.url.rtmp().unwrap().app, "live2");
    assert_eq!(yt.url.rtmp().unwrap().key, "yt-key-1234");
    assert_eq!(yt.tls_ca_file, None);
    let fb = &studio.push[1];
    assert_eq!(fb.name, "facebook");
    assert!(!fb.enabled);
    assert!(fb.url.rtmp().unwrap().tls);
    assert_eq!(fb.url.rtmp().unwrap().port, 443);
    assert_eq!(fb.url.rtmp().unwrap().app, "rtmp");
    assert_eq!(fb.url.rtmp().unwrap().key, "FB-key-5678?s_bl=1");
    assert_eq!(
        fb.tls_ca_file.as_deref(),
        Some(Path::new("/etc/cthulhu/fb-ca.pem"))
    );

    let backup = &c.streams[1];
    assert_eq!(backup.path.as_str(), "live/backup");
    assert_eq!(backup.key.expose(), "backup-secret");
    assert_eq!(backup.play_key, None);
    assert!(backup.push.is_empty());
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.server.data_dir, PathBuf::from("./cthulhu-data"));
    assert_eq!(c.rtmp.listen, "0.0.0.0:1935".parse::<SocketAddr>().unwrap());
    assert_eq!(c.rtmp.chunk_size, 4096);
    assert_eq!(c.hub.on_overflow, OnOverflow::SkipToKeyframe);
    assert!(c.streams.is_empty());
}

#[test]
fn default_embedded_uses_data_dir() {
    let c = Config::default_embedded("/tmp/somewhere");
    assert_eq!(c.server.data_dir, PathBuf::from("/tmp/somewhere"));
    assert_eq!(c.rtmp, RtmpConfig::default());
    assert_eq!(c.hub, HubConfig::default());
    assert!(c.streams.is_empty());
}

#[test]
fn debug_never_shows_keys() {
    let c = parse(FULL).unwrap();
    let shown = format!("{c:?} {c:#?}");
    for secret in [
        "studio-secret",
        "viewer-pass",
        "backup-secret",
        "yt-key-1234",
        "FB-key-5678",
        "s_bl",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("rtmp://a.rtmp.youtube.com/live2/***"),
        "{shown}"
    );
}

#[test]
fn syntax_error() {
    assert_error(
        "[rtmp\nlisten = \"127.0.0.1:1935\"\n",
        "cthulhu.toml:1:6: invalid table header; expected `.`, `]`",
    );
}

#[test]
fn srt_section_and_passphrases() {
    let c = Config::parse(
        "[srt]\nlisten = \"127.0.0.1:9100\"\nlatency_ms = 250\nidle_timeout_secs = 5\n\
         [[streams]]\npath = \"live/a\"\nkey = \"k1\"\npassphrase = \"0123456789ab\"\n\
         [[streams.push]]\nname = \"s\"\nurl = \"srt://127.0.0.1:9200?streamid=x&pbkeylen=16&passphrase=0123456789ab\"\n",
        "cthulhu.toml",
    )
    .unwrap();
    assert!(c.srt.enabled);
    assert_eq!(c.srt.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(c.srt.latency, Duration::from_millis(250));
    assert_eq!(c.srt.idle_timeout, Duration::from_secs(5));
    assert_eq!(
        c.streams[0].passphrase.as_ref().map(Secret::expose),
        Some("0123456789ab")
    );
    assert!(matches!(
        c.streams[0].push[0].url.target(),
        PushTarget::Srt(_)
    ));
    let d = Config::parse("", "cthulhu.toml").unwrap();
    assert_eq!(d.srt.listen.to_string(), DEFAULT_SRT_LISTEN);
    assert_error(
        "[srt]\nlatency_ms = 5\n",
        "cthulhu.toml:2:14: srt.latency_ms: 5 is out of range (20..=8000)",
    );
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey = \"k1\"\npassphrase = \"short\"\n",
        "cthulhu.toml:4:14: streams[0].passphrase: an SRT passphrase has 10 to 79 characters (this one has 5)",
    );
}

#[test]
fn unknown_keys() {
    assert_error(
        "[rtmp]\nlisten_addr = \"127.0.0.1:1935\"\n",
        "cthulhu.toml:2:1: rtmp.listen_addr: unknown field `listen_addr`, expected one of \
         `listen`, `chunk_size`, `handshake_timeout_secs`, `idle_timeout_secs`, `play_stall_timeout_secs`, `player_nodelay`, `audio_hold_ms`, \
         `push_stall_timeout_secs`, `max_connections`, `max_connections_per_ip`, `max_pending_connections`, `max_command_kib`, `max_media_message_kib`",
    );
    assert_error(
        "[hub]\n[srtx]\nlisten = 1\n",
        "cthulhu.toml:2:2: srtx: unknown field `srtx`, expected one of `server`, `rtmp`, `srt`, `http`, `hub`, `streams`, `storage`, `plugins`",
    );
    assert_error(
        "[srt]\nlisten = 1\n",
        "cthulhu.toml:2:10: srt.listen: invalid type: integer `1`, expected a string",
    );
    assert_error(
        &format!(
            "{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://h/app/yt-key-1234\"\nenable = false\n"
        ),
        "cthulhu.toml:7:1: streams[0].push[0].enable: unknown field `enable`, expected one of \
         `name`, `url`, `enabled`, `tls_ca_file`",
    );
}

#[test]
fn wrong_types() {
    assert_error(
        "[rtmp]\nchunk_size = \"big\"\n",
        "cthulhu.toml:2:14: rtmp.chunk_size: invalid type: string \"big\", expected i64",
    );
    assert_error(
        "[hub]\non_overflow = \"drop\"\n",
        "cthulhu.toml:2:15: hub.on_overflow: unknown variant `drop`, expected `skip-to-keyframe` or `disconnect`",
    );
    // A non-string key is refused without quoting it.
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey = 12345\n",
        "cthulhu.toml:3:7: streams[0].key: expected a string (the value is not shown: it is secret)",
    );
    assert_error(
        "[[streams]]\nkey = \"studio-secret\"\n",
        "cthulhu.toml:1:1: streams[0]: missing field `path`",
    );
}

#[test]
fn invalid_stream_path() {
    assert_error(
        "[[streams]]\npath = \"live\"\nkey = \"studio-secret\"\n",
        "cthulhu.toml:2:8: streams[0].path: invalid stream path: \"live\" is not of the form app/name",
    );
}

#[test]
fn duplicate_stream_path() {
    assert_error(
        &format!("{STREAM}\n[[streams]]\npath = \"live/studio\"\nkey = \"other\"\n"),
        "cthulhu.toml:6:8: streams[1].path: duplicate stream path \"live/studio\" (first defined at line 2)",
    );
}

#[test]
fn duplicate_push_name() {
    let text = format!(
        "{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://h/app/yt-key-1234\"\n\
         [[streams.push]]\nname = \"yt\"\nurl = \"rtmp://h/app/FB-key-5678\"\n"
    );
    assert_error(
        &text,
        "cthulhu.toml:8:8: streams[0].push[1].name: duplicate destination name \"yt\" in stream \
         \"live/studio\" (first defined at line 5)",
    );
    // The same name in two streams is fine.
    let text = format!(
        "{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://h/app/a\"\n\
         [[streams]]\npath = \"live/b\"\nkey = \"b\"\n[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://h/app/b\"\n"
    );
    assert_eq!(parse(&text).unwrap().streams.len(), 2);
}

#[test]
fn empty_push_name() {
    assert_error(
        &format!("{STREAM}[[streams.push]]\nname = \" \"\nurl = \"rtmp://h/app/yt-key-1234\"\n"),
        "cthulhu.toml:5:8: streams[0].push[0].name: must not be empty",
    );
}

#[test]
fn key_and_key_env_both_or_neither() {
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey = \"studio-secret\"\nkey_env = \"CTHULHU_TEST_STUDIO_KEY\"\n",
        "cthulhu.toml:4:11: streams[0].key_env: set either key or key_env, not both",
    );
    assert_error(
        "[hub]\n\n[[streams]]\npath = \"live/a\"\n",
        "cthulhu.toml:3:1: streams[0]: set one of key or key_env",
    );
    assert_error(
        &format!("{STREAM}play_key = \"p\"\nplay_key_env = \"CTHULHU_TEST_BACKUP_KEY\"\n"),
        "cthulhu.toml:5:16: streams[0].play_key_env: set either play_key or play_key_env, not both",
    );
}

#[test]
fn key_env_resolution() {
    let c = parse("[[streams]]\npath = \"live/a\"\nkey_env = \"CTHULHU_TEST_STUDIO_KEY\"\nplay_key_env = \"CTHULHU_TEST_BACKUP_KEY\"\n")
        .unwrap();
    assert_eq!(c.streams[0].key.expose(), "studio-secret");
    assert_eq!(
        c.streams[0].play_key.as_ref().map(Secret::expose),
        Some("backup-secret")
    );

    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey_env = \"CTHULHU_TEST_UNSET\"\n",
        "cthulhu.toml:3:11: streams[0].key_env: environment variable \"CTHULHU_TEST_UNSET\" is not set \
         (or not valid UTF-8)",
    );
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey_env = \"CTHULHU_TEST_EMPTY\"\n",
        "cthulhu.toml:3:11: streams[0].key_env: the value of environment variable \"CTHULHU_TEST_EMPTY\" \
         must not be empty",
    );
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey_env = \"CTHULHU_TEST_SPACE\"\n",
        "cthulhu.toml:3:11: streams[0].key_env: the value of environment variable \"CTHULHU_TEST_SPACE\" \
         must not contain whitespace or control characters",
    );
}

#[test]
fn parse_reads_the_process_environment() {
    // Nobody sets this variable; setting one would need `unsafe` in edition 2024.
    let name = "CTHULHU_TEST_NEVER_SET_5F0C2A";
    let err = Config::parse(
        &format!("[[streams]]\npath = \"live/a\"\nkey_env = \"{name}\"\n"),
        "x.toml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "x.toml:3:11: streams[0].key_env: environment variable \"{name}\" is not set (or not valid UTF-8)"
        )
    );
    // PATH is set in practically every test environment; use it when it makes a valid key.
    if let Ok(path) = std::env::var("PATH")
        && !path.is_empty()
        && !path.contains(char::is_whitespace)
    {
        let c = Config::parse(
            "[[streams]]\npath = \"live/a\"\nkey_env = \"PATH\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.streams[0].key.expose(), path);
    }
}

#[test]
fn empty_literal_key() {
    assert_error(
        "[[streams]]\npath = \"live/a\"\nkey = \"\"\n",
        "cthulhu.toml:3:7: streams[0].key: must not be empty",
    );
}

#[test]
fn url_scheme() {
    assert_error(
        &format!("{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"http://h/app/yt-key-1234\"\n"),
        "cthulhu.toml:6:7: streams[0].push[0].url: scheme \"http\" is not supported (use rtmp:// or rtmps://)",
    );
}

#[test]
fn url_without_key_or_app() {
    assert_error(
        &format!(
            "{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"rtmp://a.rtmp.youtube.com/live2\"\n"
        ),
        "cthulhu.toml:6:7: streams[0].push[0].url: the URL needs an application and a stream key \
         (rtmp://host/app/KEY)",
    );
    assert_error(
        &format!(
            "{STREAM}[[streams.push]]\nname = \"a\"\nurl = \"rtmp://h/app/x\"\n\
             [[streams.push]]\nname = \"b\"\nurl = \"rtmps://h/yt-key-1234\"\n"
        ),
        "cthulhu.toml:9:7: streams[0].push[1].url: the URL needs an application and a stream key \
         (rtmp://host/app/KEY)",
    );
    assert_error(
        &format!("{STREAM}[[streams.push]]\nname = \"yt\"\nurl = \"yt-key-1234\"\n"),
        "cthulhu.toml:6:7: streams[0].push[0].url: not a valid URL (relative URL without a base)",
    );
}

/// A destination with `url` and `tls_ca_file` lines (lines 6 and 7 of the text).
fn push_with_ca(url: &str, tls_ca_file: &str) -> String {
    format!(
        "{STREAM}[[streams.push]]\nname = \"dest\"\nurl = \"{url}\"\ntls_ca_file = {tls_ca_file}\n"
    )
}

#[test]
fn tls_ca_file_only_for_rtmps() {
    let c = parse(&push_with_ca(
        "rtmps://ingest.example/app/yt-key-1234",
        "\"/etc/ssl/private-ca.pem\"",
    ))
    .unwrap();
    assert_eq!(
        c.streams[0].push[0].tls_ca_file.as_deref(),
        Some(Path::new("/etc/ssl/private-ca.pem"))
    );
    assert_error(
        &push_with_ca(
            "rtmp://ingest.example/app/yt-key-1234",
            "\"/etc/ssl/ca.pem\"",
        ),
        "cthulhu.toml:7:15: streams[0].push[0].tls_ca_file: only applies to rtmps:// destinations \
         (the url is rtmp://)",
    );
    assert_error(
        &push_with_ca("rtmps://ingest.example/app/yt-key-1234", "\" \""),
        "cthulhu.toml:7:15: streams[0].push[0].tls_ca_file: must not be empty",
    );
    assert_error(
        &push_with_ca("rtmps://ingest.example/app/yt-key-1234", "5"),
        "cthulhu.toml:7:15: streams[0].push[0].tls_ca_file: invalid type: integer `5`, expected a string",
    );
    // Without tls_ca_file an rtmps:// destination trusts the system roots only.
    let c = parse(&format!(
        "{STREAM}[[streams.push]]\nname = \"dest\"\nurl = \"rtmps://h/app/k\"\n"
    ))
    .unwrap();
    assert_eq!(c.streams[0].push[0].tls_ca_file, None);
}

#[test]
fn relative_tls_ca_file_is_relative_to_the_config_file() {
    let text = format!(
        "{}[[streams.push]]\nname = \"abs\"\nurl = \"rtmps://h/app/b\"\ntls_ca_file = \"/abs/ca.pem\"\n",
        push_with_ca("rtmps://h/app/a", "\"certs/ca.pem\"")
    );
    // Parsed from text (no file): kept as written.
    let c = parse(&text).unwrap();
    assert_eq!(
        c.streams[0].push[0].tls_ca_file.as_deref(),
        Some(Path::new("certs/ca.pem"))
    );
    // Loaded from a file: relative to its directory; absolute paths stay.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cthulhu.toml");
    std::fs::write(&path, &text).unwrap();
    let c = Config::load(&path).unwrap();
    let push = &c.streams[0].push;
    assert_eq!(
        push[0].tls_ca_file.as_deref(),
        Some(dir.path().join("certs/ca.pem").as_path())
    );
    assert_eq!(
        push[1].tls_ca_file.as_deref(),
        Some(Path::new("/abs/ca.pem"))
    );
}

#[test]
fn chunk_size_range() {
    assert_error(
        "[rtmp]\nchunk_size = 100\n",
        "cthulhu.toml:2:14: rtmp.chunk_size: 100 is out of range (128..=65536)",
    );
    assert_error(
        "[rtmp]\nchunk_size = 65537\n",
        "cthulhu.toml:2:14: rtmp.chunk_size: 65537 is out of range (128..=65536)",
    );
    assert_eq!(
        parse("[rtmp]\nchunk_size = 128").unwrap().rtmp.chunk_size,
        128
    );
    assert_eq!(
        parse("[rtmp]\nchunk_size = 65536").unwrap().rtmp.chunk_size,
        65536
    );
}

#[test]
fn other_ranges() {
    assert_error(
        "[rtmp]\nidle_timeout_secs = 0\n",
        "cthulhu.toml:2:21: rtmp.idle_timeout_secs: 0 is out of range (1..=86400)",
    );
    assert_error(
        "[hub]\nsubscriber_queue_frames = -1\n",
        "cthulhu.toml:2:27: hub.subscriber_queue_frames: -1 is out of range (1..=9223372036854775807)",
    );
}

#[test]
fn listen_address() {
    assert_error(
        "[rtmp]\nlisten = \"localhost\"\n",
        "cthulhu.toml:2:10: rtmp.listen: invalid listen address \"localhost\" \
         (expected ip:port, such as 0.0.0.0:1935 or [::]:1935)",
    );
    let c = parse("[rtmp]\nlisten = \"[::]:1936\"\n").unwrap();
    assert_eq!(c.rtmp.listen, "[::]:1936".parse::<SocketAddr>().unwrap());
}

#[test]
fn log_filter_and_data_dir() {
    assert_error(
        "[server]\nlog = \"info,[\"\n",
        "cthulhu.toml:2:7: server.log: invalid log filter: invalid filter directive",
    );
    assert_error(
        "[server]\ndata_dir = \"\"\n",
        "cthulhu.toml:2:12: server.data_dir: must not be empty",
    );
}

#[test]
fn same_key_in_two_streams() {
    assert_error(
        &format!("{STREAM}\n[[streams]]\npath = \"live/other\"\nkey = \"studio-secret\"\n"),
        "cthulhu.toml:7:7: streams[1].key: stream \"live/other\" has the same key as stream \
         \"live/studio\" (streams[0]); each stream needs its own key",
    );
    // Also when one of them comes from the environment.
    assert_error(
        &format!(
            "{STREAM}\n[[streams]]\npath = \"live/other\"\nkey_env = \"CTHULHU_TEST_STUDIO_KEY\"\n"
        ),
        "cthulhu.toml:7:11: streams[1].key_env: stream \"live/other\" has the same key as stream \
         \"live/studio\" (streams[0]); each stream needs its own key",
    );
}

#[test]
fn play_key_must_not_publish() {
    assert_error(
        &format!("{STREAM}play_key = \"studio-secret\"\n"),
        "cthulhu.toml:4:12: streams[0].play_key: must differ from the stream's key",
    );
    assert_error(
        &format!(
            "{STREAM}\n[[streams]]\npath = \"live/b\"\nkey = \"b\"\nplay_key = \"studio-secret\"\n"
        ),
        "cthulhu.toml:8:12: streams[1].play_key: equals the key of stream \"live/studio\" (streams[0]); \
         a player could publish there",
    );
    assert_error(
        &format!("{STREAM}play_key = \"p\"\n\n[[streams]]\npath = \"live/b\"\nkey = \"p\"\n"),
        "cthulhu.toml:8:7: streams[1].key: the key of stream \"live/b\" equals the play key of stream \
         \"live/studio\" (streams[0]); a player could publish",
    );
    // Two streams may share a play key.
    let text = format!(
        "{STREAM}play_key = \"p\"\n\n[[streams]]\npath = \"live/b\"\nkey = \"b\"\nplay_key = \"p\"\n"
    );
    assert_eq!(parse(&text).unwrap().streams.len(), 2);
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cthulhu.toml");
    std::fs::write(&path, FULL.replace("chunk_size = 8192", "chunk_size = 1")).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:8:14: rtmp.chunk_size: 1 is out of range (128..=65536)",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read config file: ", missing.display()))
    );

    std::fs::write(&path, STREAM).unwrap();
    assert_eq!(
        Config::load(&path).unwrap().streams[0].key.expose(),
        "studio-secret"
    );
}

#[test]
fn error_fields() {
    let err = parse("[rtmp]\n  chunk_size = 1\n").unwrap_err();
    let ConfigError::Invalid {
        origin,
        line,
        column,
        key,
        ..
    } = err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!((origin.as_str(), line, column), ("cthulhu.toml", 2, 16));
    assert_eq!(key.as_deref(), Some("rtmp.chunk_size"));
}

#[test]
fn second_publisher_policy() {
    assert_eq!(
        parse("").unwrap().hub.on_second_publisher,
        OnSecondPublisher::Reject
    );
    let c = parse("[hub]\non_second_publisher = \"replace\"\n").unwrap();
    assert_eq!(c.hub.on_second_publisher, OnSecondPublisher::Replace);
    assert_error(
        "[hub]\non_second_publisher = \"both\"\n",
        "cthulhu.toml:2:23: hub.on_second_publisher: unknown variant `both`, expected `reject` or `replace`",
    );
}

#[test]
fn storage_and_recordings() {
    let c = parse(
        r#"
[storage.archive]
url = "s3://studio-archive/rec"
endpoint = "http://127.0.0.1:9900"
region = "us-east-1"
access_key_id = "AKIDEXAMPLE"
secret_access_key_env = "CTHULHU_TEST_BACKUP_KEY"
part_size_kib = 5120
max_inflight_parts = 3
max_buffered_mib = 32

[[streams]]
path = "live/studio"
key = "studio-secret"

[[streams.record]]
storage = "archive"
format = "ts"
segment_seconds = 600
name = "{path}/{date}/{time}-{seq}.ts"

[[streams.record]]
"#,
    )
    .unwrap();
    let [archive] = c.storage.as_slice() else {
        panic!("{:?}", c.storage)
    };
    assert_eq!(archive.url, "s3://studio-archive/rec");
    assert_eq!(archive.part_size, Some(5 << 20));
    assert_eq!(archive.max_inflight_parts, Some(3));
    assert_eq!(archive.max_buffered, Some(32 << 20));
    assert_eq!(
        archive.secret_access_key.as_ref().map(Secret::expose),
        Some("backup-secret")
    );
    assert!(!format!("{c:?}").contains("backup-secret"));
    let [ts, default] = c.streams[0].record.as_slice() else {
        panic!("{:?}", c.streams[0].record)
    };
    assert_eq!(ts.storage, "archive");
    assert_eq!(ts.format, RecordFormat::Ts);
    assert_eq!(ts.segment_duration, Some(Duration::from_secs(600)));
    assert_eq!(default.storage, LOCAL_STORAGE);
    assert_eq!(default.format, RecordFormat::Fmp4);
    assert_eq!(default.name, "{path}/{date}/{time}-{seq}.mp4");
    assert!(default.enabled);
}

#[test]
fn storage_and_recording_errors() {
    let stream = "[[streams]]\npath = \"live/a\"\nkey = \"studio-secret\"\n";
    assert_error(
        &format!("{stream}[[streams.record]]\nstorage = \"nope\"\n"),
        "cthulhu.toml:5:11: streams[0].record[0].storage: no [storage.nope] is defined (define it, or use \"local\": <data_dir>/recordings)",
    );
    assert_error(
        &format!("{stream}[[streams.record]]\nname = \"{{path}}/{{when}}.ts\"\n"),
        &format!(
            "cthulhu.toml:5:8: streams[0].record[0].name: {}",
            cthulhu_sinks::NameTemplate::parse("{path}/{when}.ts")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        ),
    );
    assert_error(
        "[storage.x]\nurl = \"ftp://host/dir\"\n",
        "cthulhu.toml:2:7: storage.x.url: unsupported scheme ftp:// (use s3://, gs://, az://, file:// or a directory)",
    );
    assert_error(
        "[storage.x]\nurl = \"s3://b\"\npart_size_kib = 4\n",
        "cthulhu.toml:3:17: storage.x.part_size_kib: 4 is out of range (64..=5242880)",
    );
    assert_error(
        "[storage.x]\nurl = \"s3://b\"\nendpoint = \"127.0.0.1:9000\"\n",
        "cthulhu.toml:3:12: storage.x.endpoint: must be an http:// or https:// URL",
    );
}

#[test]
fn a_storage_directory_is_relative_to_the_config_file() {
    let c = Config::parse_in(
        "[storage.disk]\nurl = \"rec\"\n",
        "cthulhu.toml",
        Some(Path::new("/etc/cthulhu")),
        &env,
    )
    .unwrap();
    assert_eq!(c.storage[0].url, "file:///etc/cthulhu/rec");
}

#[test]
fn plugins() {
    let c = Config::parse_in(
        r#"
[[plugins]]
kind = "auth"
path = "plugins/stream-key-auth.wasm"
sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
config = { keys = ["k1", "k2"], expiry = { k2 = 1700000000 } }
timeout_ms = 20
memory_mb = 8

[[plugins]]
kind = "route"
path = "/opt/route.wasm"
"#,
        "cthulhu.toml",
        Some(Path::new("/etc/cthulhu")),
        &env,
    )
    .unwrap();
    let [auth, route] = c.plugins.as_slice() else {
        panic!("{:?}", c.plugins)
    };
    assert_eq!(auth.kind, PluginHook::Auth);
    assert_eq!(
        auth.path,
        PathBuf::from("/etc/cthulhu/plugins/stream-key-auth.wasm")
    );
    assert_eq!(
        auth.sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(
        auth.config,
        serde_json::json!({"keys": ["k1", "k2"], "expiry": {"k2": 1700000000}})
    );
    assert_eq!(auth.timeout, Duration::from_millis(20));
    assert_eq!(auth.memory_bytes, 8 << 20);
    assert_eq!(route.path, PathBuf::from("/opt/route.wasm"));
    assert_eq!(route.timeout, Duration::from_millis(50));
    assert_eq!(route.config, serde_json::Value::Null);

    assert_error(
        "[[plugins]]\nkind = \"auth\"\npath = \"a.wasm\"\n[[plugins]]\nkind = \"auth\"\npath = \"b.wasm\"\n",
        "cthulhu.toml:4:1: plugins[1].kind: only one auth and one route plugin (a plugin can combine rules itself)",
    );
    assert_error(
        "[[plugins]]\nkind = \"auth\"\npath = \"a.wasm\"\nsha256 = \"abc\"\n",
        "cthulhu.toml:4:10: plugins[0].sha256: must be 64 hex digits (sha256sum FILE)",
    );
    assert_error(
        "[[plugins]]\nkind = \"auth\"\npath = \"a.wasm\"\ntimeout_ms = 0\n",
        "cthulhu.toml:4:14: plugins[0].timeout_ms: 0 is out of range (1..=10000)",
    );
}

#[test]
fn rtmp_input_and_connection_limits() {
    let d = Config::parse("", "cthulhu.toml").unwrap().rtmp;
    assert_eq!(
        (
            d.max_connections,
            d.max_connections_per_ip,
            d.max_pending_connections,
            d.max_command_bytes,
            d.max_media_bytes
        ),
        (10_000, 1_000, 1_024, 64 * 1024, 8 * 1024 * 1024)
    );
    let c = Config::parse(
        "[rtmp]\nmax_connections = 0\nmax_connections_per_ip = 5\nmax_pending_connections = 7\n\
         max_command_kib = 128\nmax_media_message_kib = 16384\n",
        "cthulhu.toml",
    )
    .unwrap()
    .rtmp;
    assert_eq!(
        (
            c.max_connections,
            c.max_connections_per_ip,
            c.max_pending_connections,
            c.max_command_bytes,
            c.max_media_bytes
        ),
        (0, 5, 7, 128 * 1024, 16 << 20)
    );
    assert_error(
        "[rtmp]\nmax_media_message_kib = 16385\n",
        "cthulhu.toml:2:25: rtmp.max_media_message_kib: 16385 is out of range (64..=16384)",
    );
    assert_error(
        "[rtmp]\nmax_command_kib = 0\n",
        "cthulhu.toml:2:19: rtmp.max_command_kib: 0 is out of range (1..=16384)",
    );
}

#[test]
fn srt_connection_limits() {
    let d = Config::parse("", "cthulhu.toml").unwrap().srt;
    assert_eq!(
        (
            d.max_connections,
            d.max_connections_per_ip,
            d.max_pending_handshakes
        ),
        (1024, 256, 256)
    );
    let c = Config::parse(
        "[srt]\nmax_connections = 10\nmax_connections_per_ip = 0\nmax_pending_handshakes = 4\n",
        "cthulhu.toml",
    )
    .unwrap()
    .srt;
    assert_eq!(
        (
            c.max_connections,
            c.max_connections_per_ip,
            c.max_pending_handshakes
        ),
        (10, 0, 4)
    );
    assert_error(
        "[srt]\nmax_connections = 0\n",
        "cthulhu.toml:2:19: srt.max_connections: 0 is out of range (1..=100000)",
    );
}

/// An `[http]` section with the given `tls_cert` and `tls_key` lines (lines 2 and 3
/// when both are given).
fn http_tls(cert: Option<&Path>, key: Option<&Path>) -> String {
    let mut text = "[http]\n".to_owned();
    for (name, path) in [("tls_cert", cert), ("tls_key", key)] {
        if let Some(path) = path {
            text.push_str(&format!("{name} = {:?}\n", path.display().to_string()));
        }
    }
    text
}

/// A test CA's localhost certificate and key written to `dir` as `cert.pem` (leaf
/// and CA: a chain) and `key.pem`.
fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ca = cthulhu_testkit::TestCa::new("Config test CA").unwrap();
    let leaf = ca.issue_localhost().unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, leaf.cert_pem + &ca.cert_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem).unwrap();
    (cert, key)
}

/// Asserts that `text` fails at `line:col` on `key` with a message starting with
/// `start` and containing `contains`.
#[track_caller]
fn assert_error_starts(text: &str, at: &str, start: &str, contains: &str) {
    let got = parse(text).unwrap_err().to_string();
    let want = format!("cthulhu.toml:{at}: {start}");
    assert!(got.starts_with(&want), "{got:?} should start with {want:?}");
    assert!(
        got.contains(contains),
        "{got:?} should contain {contains:?}"
    );
}

#[test]
fn http_tls_cert_and_key_both_or_neither() {
    assert_eq!(parse("").unwrap().http.tls, None);
    assert_eq!(parse("[http]\nenabled = true\n").unwrap().http.tls, None);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());

    let c = parse(&http_tls(Some(&cert), Some(&key))).unwrap();
    assert_eq!(
        c.http.tls,
        Some(HttpTls {
            cert: cert.clone(),
            key: key.clone()
        })
    );
    // The order of the keys does not matter.
    let text = format!(
        "[http]\ntls_key = {:?}\ntls_cert = {:?}\n",
        key.display().to_string(),
        cert.display().to_string()
    );
    assert!(parse(&text).unwrap().http.tls.is_some());

    assert_error(
        &http_tls(Some(&cert), None),
        "cthulhu.toml:2:12: http.tls_cert: needs http.tls_key too (both or neither)",
    );
    assert_error(
        &http_tls(None, Some(&key)),
        "cthulhu.toml:2:11: http.tls_key: needs http.tls_cert too (both or neither)",
    );
    assert_error(
        &format!(
            "[http]\ntls_cert = \" \"\ntls_key = {:?}\n",
            key.display().to_string()
        ),
        "cthulhu.toml:2:12: http.tls_cert: must not be empty",
    );
    assert_error(
        &format!(
            "[http]\ntls_cert = {:?}\ntls_key = \"\"\n",
            cert.display().to_string()
        ),
        "cthulhu.toml:3:11: http.tls_key: must not be empty",
    );
    assert_error(
        "[http]\ntls_cert = 5\n",
        "cthulhu.toml:2:12: http.tls_cert: invalid type: integer `5`, expected a string",
    );
}

#[test]
fn http_tls_files_are_read_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let missing = dir.path().join("missing.pem");

    // Unreadable files, named with the key they come from.
    assert_error_starts(
        &http_tls(Some(&missing), Some(&key)),
        "2:12",
        &format!("http.tls_cert: cannot read {}: ", missing.display()),
        "No such file",
    );
    assert_error_starts(
        &http_tls(Some(&cert), Some(&missing)),
        "3:11",
        &format!("http.tls_key: cannot read {}: ", missing.display()),
        "No such file",
    );
    assert_error_starts(
        &http_tls(Some(dir.path()), Some(&key)),
        "2:12",
        &format!("http.tls_cert: cannot read {}: ", dir.path().display()),
        "",
    );

    // Files of the wrong kind or content.
    assert_error_starts(
        &http_tls(Some(&key), Some(&key)),
        "2:12",
        &format!("http.tls_cert: no certificate in {}", key.display()),
        "BEGIN CERTIFICATE",
    );
    assert_error_starts(
        &http_tls(Some(&cert), Some(&cert)),
        "3:11",
        &format!("http.tls_key: no private key in {}", cert.display()),
        "BEGIN PRIVATE KEY",
    );
    let cases = [
        (
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "invalid PEM in",
        ),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n", "invalid PEM in"),
        (
            "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
            "unusable certificate in",
        ),
    ];
    let bad = dir.path().join("bad.pem");
    for (text, want) in cases {
        std::fs::write(&bad, text).unwrap();
        assert_error_starts(
            &http_tls(Some(&bad), Some(&key)),
            "2:12",
            &format!("http.tls_cert: {want} {}", bad.display()),
            "",
        );
    }
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    assert_error_starts(
        &http_tls(Some(&cert), Some(&bad)),
        "3:11",
        &format!("http.tls_key: unusable key in {}", bad.display()),
        "",
    );

    // The key of another certificate.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = write_cert(other.path());
    assert_error(
        &http_tls(Some(&cert), Some(&other_key)),
        &format!(
            "cthulhu.toml:3:11: http.tls_key: the key in {} does not belong to the certificate in {}",
            other_key.display(),
            cert.display()
        ),
    );
}

#[test]
fn relative_http_tls_files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    write_cert(&dir.path().join("certs"));
    let path = dir.path().join("cthulhu.toml");
    std::fs::write(
        &path,
        "[http]\ntls_cert = \"certs/cert.pem\"\ntls_key = \"certs/key.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.http.tls,
        Some(HttpTls {
            cert: dir.path().join("certs/cert.pem"),
            key: dir.path().join("certs/key.pem"),
        })
    );
    // A missing file: the error names the config file and the resolved path.
    std::fs::remove_file(dir.path().join("certs/key.pem")).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:3:11: http.tls_key: cannot read {}: ",
            path.display(),
            dir.path().join("certs/key.pem").display()
        )),
        "{err}"
    );
}
