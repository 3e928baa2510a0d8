from jobsys.db.url import mask, scrub, with_database


def test_mask_hides_password_in_url_and_conninfo() -> None:
    assert mask("postgresql://u:s3cr3t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask("host=h password=s3cr3t dbname=x") == "host=h password=*** dbname=x"
    assert mask(None) == "(none)"


def test_scrub_removes_password_from_text() -> None:
    assert "s3cr3t" not in scrub('FATAL: password "s3cr3t" wrong', "postgresql://u:s3cr3t@h/db")


def test_with_database_keeps_query() -> None:
    assert with_database("postgresql://p@/postgres?host=/tmp", "x") == "postgresql://p@/x?host=/tmp"
