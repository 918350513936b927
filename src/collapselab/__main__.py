from collapselab.cli.main import app

app()
