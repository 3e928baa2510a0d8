from jobsys.cli.main import run

run()
