"""Serving: the gunicorn worker and everything between a client socket and the app.

- worker.py: the gunicorn worker class (the process lifecycle stays gunicorn's);
- loop.py: the selector loop, which alone reads and writes client sockets;
- protocol.py: HTTP/1.1 framing with llhttp (httptools), one parser per connection;
- wsgi.py: a parsed request through the Flask app to the bytes of its response;
- pool.py: the app on pool threads for large requests, handing bytes back;
- accepting.py and admission.py: taking connections, the caps and whom to shed;
- handshake.py: TLS in the loop; connection.py: one connection's state;
- limits.py: what the worker gives the loop.
"""
