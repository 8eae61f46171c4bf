# A small image for the suites' workloads (Debian's static busybox): sh, sleep, httpd, nc.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
