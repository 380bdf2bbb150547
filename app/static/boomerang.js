/*
 * Boomerang's browser helper: watch a job without polling.
 *
 *   const watch = Boomerang.watch(job.stream_url, {
 *     onProgress(progress, job) { ... },   // {percent, message}
 *     onDone(job) { ... },                 // job.status is "succeeded" or "failed"
 *     onError(error) { ... },              // the stream cannot go on (expired token, say)
 *   });
 *   watch.close();
 *
 * It uses Server-Sent Events, which reconnect by themselves and resume with Last-Event-ID, so no
 * event is missed across a dropped connection. Where EventSource is missing it long-polls the
 * same job instead. No build step, no dependencies.
 */
(function (global) {
  "use strict";

  var TERMINAL = { succeeded: true, failed: true };
  var LONG_POLL_SECONDS = 30;

  function noop() {}

  function handlersOf(options) {
    options = options || {};
    return {
      onProgress: options.onProgress || noop,
      onDone: options.onDone || noop,
      onError: options.onError || noop,
    };
  }

  // The job's long-poll URL: the stream URL without "/events".
  function pollUrlOf(streamUrl) {
    return streamUrl.replace(/\/events(\?|$)/, "$1");
  }

  function watchWithEvents(streamUrl, on) {
    var done = false;
    var source = new global.EventSource(streamUrl);

    function seen(job) {
      if (done) return;
      if (TERMINAL[job.status]) {
        done = true;
        source.close();
        on.onDone(job);
      } else if (job.progress) {
        on.onProgress(job.progress, job);
      }
    }

    function listen(type) {
      source.addEventListener(type, function (message) {
        var envelope;
        try {
          envelope = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        seen(envelope.data);
      });
    }
    ["job.state", "job.progress", "job.succeeded", "job.failed"].forEach(listen);

    source.onerror = function () {
      // While CONNECTING the browser is already retrying with Last-Event-ID; CLOSED means the
      // server refused the stream (an expired or foreign token) and nothing will retry.
      if (!done && source.readyState === global.EventSource.CLOSED) {
        done = true;
        on.onError(new Error("the job's stream was refused"));
      }
    };
    return {
      close: function () {
        done = true;
        source.close();
      },
    };
  }

  function watchWithLongPoll(streamUrl, on) {
    var stopped = false;
    var etag = null;
    var url = pollUrlOf(streamUrl);
    var separator = url.indexOf("?") === -1 ? "?" : "&";

    function poll() {
      if (stopped) return;
      var headers = etag ? { "If-None-Match": etag } : {};
      global
        .fetch(url + separator + "wait=" + LONG_POLL_SECONDS, { headers: headers })
        .then(function (response) {
          if (response.status === 304) return null;
          if (!response.ok) throw new Error("the job's long poll answered " + response.status);
          etag = response.headers.get("ETag");
          return response.json();
        })
        .then(function (job) {
          if (stopped) return;
          if (job && TERMINAL[job.status]) {
            stopped = true;
            on.onDone(job);
            return;
          }
          if (job && job.progress) on.onProgress(job.progress, job);
          poll();
        })
        .catch(function (error) {
          if (stopped) return;
          stopped = true;
          on.onError(error);
        });
    }
    poll();
    return {
      close: function () {
        stopped = true;
      },
    };
  }

  global.Boomerang = {
    watch: function (streamUrl, options) {
      var on = handlersOf(options);
      if (typeof global.EventSource === "function") return watchWithEvents(streamUrl, on);
      return watchWithLongPoll(streamUrl, on);
    },
  };
})(window);
