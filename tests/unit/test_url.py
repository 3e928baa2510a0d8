import pytest

from jobsys.db.url import mask, scrub, with_database


def test_mask_hides_password_in_url_and_conninfo() -> None:
    assert mask("postgresql://u:s3cr3t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask("host=h password=s3cr3t dbname=x") == "host=h password=*** dbname=x"
    assert mask(None) == "(none)"


def test_scrub_removes_password_from_text() -> None:
    assert "s3cr3t" not in scrub('FATAL: password "s3cr3t" wrong', "postgresql://u:s3cr3t@h/db")


def test_an_unencoded_at_in_the_password_leaves_none_of_it_printed() -> None:
    # Everything up to the netloc's last '@' is the user info: 'bob:***@Pw@...' showed
    # the password's tail.
    url = "postgresql://bob:S3cret@Pw@127.0.0.1:56749/x"
    assert mask(url) == "postgresql://bob:***@127.0.0.1:56749/x"
    assert mask("postgresql://bob:a@b@c@h/x?sslmode=require") == (
        "postgresql://bob:***@h/x?sslmode=require"
    )
    assert mask("postgresql://bob:@h@x/db") == "postgresql://bob:***@x/db"
    # libpq reads 'Pw@127.0.0.1' as the host, and says so.
    said = "failed to resolve host 'Pw@127.0.0.1': [Errno -2] Name or service not known"
    assert scrub(said, url) == (
        "failed to resolve host '***@127.0.0.1': [Errno -2] Name or service not known"
    )


def test_with_database_keeps_query() -> None:
    assert with_database("postgresql://p@/postgres?host=/tmp", "x") == "postgresql://p@/x?host=/tmp"


def test_form_problem_accepts_postgres_urls_and_conninfo() -> None:
    from jobsys.db.url import form_problem

    for ok in (
        "postgresql://u:pw@h:5432/db",
        "postgres://u@h/db",
        "POSTGRESQL://h/db",
        "postgresql:///db?host=/tmp",
        "host=h dbname=x user=u password=pw",
        " dbname = x",
    ):
        assert form_problem(ok) is None, ok
    assert form_problem("mysql://u:pw@h/x") == "is a mysql:// URL, not a PostgreSQL one"
    assert form_problem("localhost") is not None
    assert form_problem("h:5432/db") is not None


def test_resolve_refuses_a_url_that_is_not_postgres(tmp_path) -> None:  # type: ignore[no-untyped-def]

    from jobsys.db.connect import resolve
    from jobsys.errors import EXIT_USAGE, UsageError
    from jobsys.settings import Settings

    settings = Settings(database_url="mysql://u:s3cr3t@h/x", home=tmp_path)
    with pytest.raises(UsageError) as caught:
        resolve(settings)
    assert caught.value.exit_code == EXIT_USAGE
    assert "mysql://u:***@h/x" in caught.value.message
    assert "s3cr3t" not in str(caught.value)
    assert "postgresql://" in (caught.value.hint or "")


def test_a_password_in_any_url_of_a_free_text_is_scrubbed() -> None:
    # Where the caller does not know the URL (the web's driver errors) or knows another.
    text = "cannot connect to postgresql://bob:S3cret@Pw@127.0.0.1:1/x: refused"
    assert scrub(text, None) == "cannot connect to postgresql://bob:***@127.0.0.1:1/x: refused"
    assert scrub(text, "postgresql://other:pw@h/x").count("S3cret") == 0
    # no user info, or no password: unchanged
    plain = "at postgresql://bob@h:5432/x and postgresql://h:5432/y, see http://a.b/c:d"
    assert scrub(plain, None) == plain
    # a port is not a password, and an '@' after the URL's path is not its user info
    assert scrub("see http://host:8080/p?e=a@b.com", None) == "see http://host:8080/p?e=a@b.com"
    assert scrub("postgresql://u:p@[::1]:5432/x", None) == "postgresql://u:***@[::1]:5432/x"


#: A password with an unencoded '@': libpq quotes its tail as a host.
AT_URL = "postgresql://bob:S3cret@Pw@127.0.0.1:1/x"


@pytest.fixture
def cli_failing(monkeypatch):  # type: ignore[no-untyped-def]
    """``jobsys.cli.main`` whose every command raises an unexpected error quoting the
    host libpq read from AT_URL, with no JOBSYS_DATABASE_URL set."""
    from jobsys.cli import main as cli_main

    def failing(_name: object) -> object:
        def app(**_kwargs: object) -> None:
            raise RuntimeError("failed to resolve host 'Pw@127.0.0.1'")

        return app

    monkeypatch.setattr(cli_main, "build", failing)
    monkeypatch.delenv("JOBSYS_DATABASE_URL", raising=False)
    return cli_main


def test_an_internal_error_scrubs_the_password_given_by_flag(cli_failing, capsys) -> None:  # type: ignore[no-untyped-def]
    """The last-resort handler scrubbed only JOBSYS_DATABASE_URL's password: one given
    with --database-url, quoted by the driver as a host, was printed."""
    for argv in (
        ["--database-url", AT_URL, "db", "status"],
        [f"--database-url={AT_URL}", "db", "status"],
    ):
        assert cli_failing.main(argv) == 1
        err = capsys.readouterr().err
        assert "internal error" in err and "Pw@" not in err, err


def test_an_internal_error_scrubs_the_password_of_queues_yaml(  # type: ignore[no-untyped-def]
    cli_failing, capsys, tmp_path
) -> None:
    """The URL given only as database.url in queues.yaml (found in review)."""
    import shutil
    from pathlib import Path

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    with (config / "queues.yaml").open("a") as f:
        f.write(f"\ndatabase:\n  url: {AT_URL}\n")
    assert cli_failing.main(["--config-dir", str(config), "db", "status"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "Pw@" not in err, err
