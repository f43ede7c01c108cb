# A stand-in for the official redis image, from Debian's packages, for machines that cannot pull
# from Docker Hub (docker/standins.sh builds it): redis-server and redis-cli on the PATH, run as
# user redis in /data, listening on every interface (docker-compose.yml sets --requirepass).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
