"""Database access: where the server is (URL or embedded), connections, schema checks.

Driver errors are translated here into :mod:`jobsys.errors` so no caller sees a
psycopg traceback or a password.
"""
