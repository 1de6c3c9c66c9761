@0xd4de2d66eb5b9388;
# A small service for exercising the network layer: echo, a call that only returns when
# released, and who-am-I for checking connection bookkeeping.

interface TestService {
  echo @0 (text :Text) -> (text :Text);
  hang @1 () -> ();
  release @2 () -> (released :UInt32);
  whoAmI @3 () -> (peer :Text, threadIndex :UInt32, connectionId :UInt64);

  child @4 (name :Text) -> (child :TestService);
  fail @5 (why :Text, later :Bool) -> ();

  callBack @6 (target :TestService, text :Text) -> ();
  # Returns at once, then calls target.echo(text): the server's Finish of that call is the last
  # message it sends on the connection.

  childLater @7 (name :Text, fail :Bool) -> (child :TestService);
  # Returns once release() is called: the child, as child() makes it; or, given `fail`, fails
  # with "no child for <name>".
}
