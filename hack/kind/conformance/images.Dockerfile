# The images the [Conformance] specs make conformance runs name (conformance/images.sh),
# built with no registry: one busybox (Debian's busybox-static) root, and per target
# what that upstream image must do for those specs.
FROM scratch AS root
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/sh", "-c", "mkdir -p /tmp /etc /uploads && chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' >/etc/passwd && echo 'user-defined-in-image:x:1000:1000::/tmp:/bin/sh' >>/etc/passwd && echo 'root:x:0:' >/etc/group && echo 'group-defined-in-image:x:50000:user-defined-in-image' >>/etc/group"]
ENV PATH=/bin

# registry.k8s.io/e2e-test-images/busybox: sh and the usual tools.
FROM root AS busybox
ARG VERSION
RUN ["/bin/sh", "-c", "echo busybox $VERSION >/version"]
CMD ["sh"]

# .../httpd: the specs exec into it (mv of /usr/local/apache2/htdocs/index.html breaks the
# readiness probe, an HTTP GET of /index.html on port 80). busybox httpd serves that.
FROM root AS httpd
ARG VERSION
RUN ["/bin/sh", "-c", "mkdir -p /usr/local/apache2/htdocs && echo '<html><body><h1>It works!</h1></body></html>' >/usr/local/apache2/htdocs/index.html && echo httpd $VERSION >/version"]
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/usr/local/apache2/htdocs"]

# .../nginx: a web server on port 80.
FROM root AS nginx
ARG VERSION
RUN ["/bin/sh", "-c", "mkdir -p /usr/share/nginx/html && echo '<html><body>Welcome to nginx!</body></html>' >/usr/share/nginx/html/index.html && echo nginx $VERSION >/version"]
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"]

# .../agnhost: the upstream binary (test/images/agnhost, built by conformance/build.sh)
# as upstream lays it out (/agnhost, entrypoint, `pause` by default), on the busybox root
# in place of Alpine's shell tools.
FROM root AS agnhost
COPY agnhost /agnhost
RUN ["/bin/ln", "-s", "agnhost", "/agnhost-2"]
EXPOSE 80 8080 8081 9376 5000
ENTRYPOINT ["/agnhost"]
CMD ["pause"]
