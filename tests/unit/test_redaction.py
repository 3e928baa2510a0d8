from jobsys.failures.redaction import Redactor


def test_nested_keys_are_redacted_case_insensitively() -> None:
    r = Redactor()
    args = {
        "account_id": 7,
        "Password": "hunter22",
        "nested": {"X-Api-Key": "k-123456", "list": [{"sessionId": "abcdef"}, {"ok": 1}]},
    }
    out = r.redact(args)
    assert out == {
        "account_id": 7,
        "Password": "[REDACTED]",
        "nested": {"X-Api-Key": "[REDACTED]", "list": [{"sessionId": "[REDACTED]"}, {"ok": 1}]},
    }
    assert args["Password"] == "hunter22"  # the input is untouched


def test_secret_values_are_scrubbed_from_texts() -> None:
    r = Redactor()
    args, (msg,) = r.redact_with_text(
        {"token": {"value": "CANARY-9f8e"}}, "login failed with token CANARY-9f8e"
    )
    assert "CANARY" not in msg
    assert args == {"token": "[REDACTED]"}


def test_custom_patterns_and_replacement() -> None:
    r = Redactor(keys=("pin",), replacement="***")
    assert r.redact({"PIN_code": 1234, "password": "x"}) == {"PIN_code": "***", "password": "x"}
