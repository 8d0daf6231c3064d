from robustmq.cli import app

app()
